"""Per-layer gradient bytes and forward FLOPs of the models the projection is checked on
(Keras applications, built without weights) and of hpctrain's zoo, in forward order:
src/hpctrain/scaling/layer_profiles.json. `hpctrain project` reads it to know when each
layer's gradients become ready during the backward pass.

    .venv/bin/python scripts/layer_profiles.py        # ~1 min, no download
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

OUT = Path(__file__).resolve().parents[1] / "src" / "hpctrain" / "scaling" / "layer_profiles.json"


def layer_flops(layer) -> float:
    """Forward multiply-adds x 2 of the layers that dominate compute (per image)."""
    import tensorflow as tf

    cls = type(layer).__name__
    if cls in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
        out = layer.output.shape
        kh, kw = layer.kernel_size
        if cls == "Conv2D":
            cin = layer.input.shape[-1] // getattr(layer, "groups", 1)
            return 2.0 * out[1] * out[2] * kh * kw * cin * out[-1]
        return 2.0 * out[1] * out[2] * kh * kw * layer.input.shape[-1]
    if isinstance(layer, tf.keras.layers.Dense):
        return 2.0 * layer.input.shape[-1] * layer.units
    if isinstance(layer, tf.keras.layers.LSTM):  # 4 gates per step: input and recurrent
        steps, width = layer.input.shape[1], layer.input.shape[-1]
        return 2.0 * steps * 4 * layer.units * (width + layer.units)
    return 0.0


def leaves(model):
    """The model's layers, nested models (the zoo's ResNet-50 wraps Keras') unrolled."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from leaves(layer)
        else:
            yield layer


def profile(model) -> dict:
    layers = []
    for layer in leaves(model):
        nbytes = sum(int(w.shape.num_elements()) * w.dtype.size
                     for w in layer.trainable_weights)
        flops = layer_flops(layer)
        if nbytes or flops:
            layers.append([nbytes, flops])
    return {"parameters": int(model.count_params()),
            "gradient_bytes": int(sum(b for b, _ in layers)),
            "forward_flops_per_image": float(sum(f for _, f in layers)),
            "layers": layers}


def main() -> int:
    import tensorflow as tf

    sys.path.insert(0, str(OUT.parents[2]))
    from hpctrain.train.models import build_model

    apps = tf.keras.applications
    models = {
        "resnet50": lambda: apps.ResNet50(weights=None),
        "resnet101": lambda: apps.ResNet101(weights=None),
        "inception_v3": lambda: apps.InceptionV3(weights=None),
        "vgg16": lambda: apps.VGG16(weights=None),
        **{f"zoo:{m}": (lambda m=m: build_model(m, (28, 28, 1), 10, "relu"))
           for m in ("softmax", "mlp5", "mlp5_dropout", "cnn", "cnn64", "cnn_bn",
                     "cnn_notebook", "lenet5", "lstm")},
        "zoo:resnet20": lambda: build_model("resnet20", (32, 32, 3), 10, "relu"),
        "zoo:resnet50": lambda: build_model("resnet50", (224, 224, 3), 1000, "relu"),
    }
    out = {}
    for name, build in models.items():
        out[name] = profile(build())
        print(f"{name}: {out[name]['parameters']:,} parameters, "
              f"{out[name]['gradient_bytes'] / 1e6:.1f} MB of gradients, "
              f"{out[name]['forward_flops_per_image'] / 1e9:.2f} GFLOP per image forward, "
              f"{len(out[name]['layers'])} layers")
        tf.keras.backend.clear_session()
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    tmp.replace(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
