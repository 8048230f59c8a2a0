"""Published data-parallel scaling figures the step-time model (costmodel.py) is checked on,
each with its source, and the split declared before any constant was fitted: `calibration`
figures fit the model's free constants (published.py), `held-out` figures only check it.

Each figure gives what the model needs: the model (its layers from layer_profiles.json),
one GPU's throughput and batch (-> its compute per step), GPUs per node, the links (within a
node: NCCL's all_reduce bus bandwidth on that platform; between nodes: the NIC's nominal
rate and whether NCCL ran over RDMA or TCP), the Horovod of the day (cycle time, fusion
buffer, response cache: Horovod changed its defaults from 5 ms / 64 MiB to 1 ms / 128 MiB in
0.21, 2020, and gained its response cache in 2019), and the published efficiency =
images/s(N) / (N x images/s(1)).

A second held-out set (`HELD_OUT_2`) was declared after the model had been checked on the
first and missed, before any change to the model or its constants: figures from sources it
had never been checked on, so that a changed model can be judged on figures nobody tuned it
against. The first held-out set, having been looked at, no longer counts as unseen for a
changed model. A third (`HELD_OUT_3`) was declared the same way after the second, with the
model still unchanged: every figure of a printed table with its setup stated that runs
stock Horovod over NCCL (OneFlow's DLPerf, 2020: NVIDIA's ResNet-50 code in TensorFlow and
MXNet on 1 to 4 nodes of 8 V100 over EDR InfiniBand). Left out of it by that rule, before
any projection: tables whose gradients go through the authors' own schedulers (HKBU's
ddl-benchmarks), figures read off charts with the network's speed unstated (Azure Batch AI
benchmarks of 2018), and gluon-cv's tables (a CPU-decoded input pipeline its authors' own
FP16 figures show to be the bottleneck).

In scope: synchronous data parallelism whose gradients are summed by NCCL's allreduce on the
GPUs (Horovod's NCCL path). Left out, and why: parameter-server runs (tf_cnn_benchmarks'
parameter_server mode, Distributed TensorFlow: no allreduce), Horovod's allreduce on CPU
buffers (device-host copies the model has no term for).
"""

from __future__ import annotations

from dataclasses import dataclass

from hpctrain.scaling.costmodel import Network

GBIT = 1e9 / 8
GBYTE = 1e9
# NCCL all_reduce bus bandwidth within one node (nccl-tests' busbw at large messages)
NVLINK_A100 = 230 * GBYTE  # DGX A100, 8 GPUs over NVSwitch
NVLINK_V100 = 130 * GBYTE  # DGX-1V / p3.16xlarge, 8 V100 over NVLink
PCIE3 = 10 * GBYTE  # 4 GPUs per server over PCIe 3 x16 (Horovod's 2017 Pascal servers)

CALIBRATION, HELD_OUT, HELD_OUT_2, HELD_OUT_3 = ("calibration", "held-out", "held-out-2",
                                                 "held-out-3")


@dataclass(frozen=True)
class Figure:
    key: str
    source: str
    model: str  # a layer_profiles.json entry
    hardware: str
    gpus: int
    gpus_per_node: int
    network: str
    net: Network  # nominal: the fitted delivered share applies to `bandwidth` across nodes
    transport: str  # "nvlink" (one node), "rdma" or "tcp" between nodes
    gpu_images_per_s: float  # one GPU
    batch: int  # per GPU
    published_efficiency: float
    role: str  # CALIBRATION or a held-out set, declared before fitting
    cycle_s: float = 5e-3  # Horovod < 0.21
    fusion_bytes: float = 64 * 2**20  # Horovod < 0.21
    response_cache: bool = False  # Horovod < 0.16
    algorithm: str = "ring"  # NCCL < 2.4: rings only
    why: str = ""  # what is uncertain in the figure


DLE = ("NVIDIA DeepLearningExamples TensorFlow/Classification/ConvNets/resnet50v1.5/README.md, "
       "training performance (NGC 20.06-tf1-py3, Horovod 0.19, XLA on; DGX A100 batch 256; "
       "DGX-1 V100 batch 128 FP32, 256 AMP), https://github.com/NVIDIA/DeepLearningExamples/"
       "tree/master/TensorFlow/Classification/ConvNets/resnet50v1.5")
HOROVOD_2017 = ("Horovod README of 2017-10-02 (commit 849ef0a6; the table from d54e3a88 of "
                "2017-09-05): 4 servers x 4 Pascal GPUs, RoCE-capable 25 Gbit/s, single GPU at "
                "batch 64 Inception V3 134.4, ResNet-101 119.4, VGG-16 130.9 img/s; 16 GPUs "
                "with NCCL over RDMA 2,022.6 / 1,746.2 / 1,787.4, over TCP 1,990.7 / 1,685.1 / "
                "1,308.7 img/s; 16 servers x 4 Pascal, plain 40 Gbit/s, single GPU 148.8 / "
                "136.0 / 149.6, 64 GPUs with NCCL over TCP 7,932.1 / 7,741.6 / 6,084.2 img/s, "
                "https://github.com/horovod/horovod/blob/849ef0a636302d7e734a47c9c9bb80b3fa5597aa"
                "/README.md")
HOROVOD_SCALE = ("Horovod README of 2017-10-17 (commit 6bb6a2db): \"32 servers with 4 Pascal GPUs"
                 " each connected by RoCE-capable 25 Gbit/s network ... 90% scaling efficiency "
                 "for both Inception V3 and ResNet-101, and 79% ... for VGG-16\"; docs/"
                 "benchmarks.rst: \"128 servers with 4 Pascal GPUs ... 90% ... and 68% ... for "
                 "VGG-16\" (tf_cnn_benchmarks, synthetic data), https://github.com/horovod/"
                 "horovod/blob/master/docs/benchmarks.rst")
AWS = ("aws-samples/deep-learning-models issue 2: ResNet-50 + Horovod on p3.16xlarge, batch 256,"
       " 1 GPU 740 img/s, 2x8 GPUs 9,860, 8x8 GPUs ~37,000, "
       "https://github.com/aws-samples/deep-learning-models/issues/2")
HVD416 = ("Horovod issue 416 (2018-08-02): 2 servers x 8 V100, 4 GPUs per PCIe switch (x16), the "
          "two switches of a server joined over QPI, RoCE 40 Gbit/s with GPUDirect RDMA "
          "(ConnectX-3 Pro), tf_cnn_benchmarks ResNet-101 FP32 batch 64: 1 GPU 202.78, 4 GPUs "
          "650.92, 2 x 8 GPUs 2,379.56 img/s, https://github.com/horovod/horovod/issues/416")
HVD889 = ("Horovod issue 889 (2019-03-06): one server, 4 V100 over PCIe gen3 x16, TensorFlow "
          "1.12, Horovod 0.16.0, NCCL 2.2.13, ResNet-50 on ImageNet at batch 64 per GPU: 3.81 "
          "steps/s on 1 GPU, 2.62 steps/s on 4, https://github.com/horovod/horovod/issues/889")
DLE_MX = ("NVIDIA DeepLearningExamples MxNet/Classification/RN50v1.5/README.md (1bd98ac3723a), "
          "training performance through Horovod (kv-store horovod, HOROVOD_CYCLE_TIME=0.1 ms, "
          "fusion 64 MiB, MXNET_HOROVOD_NUM_GROUPS=16), DALI input: DGX-2 16 x V100 "
          "(mxnet-20.12) batch 256 AMP / 128 FP32, 1 GPU 1,492 / 417, 16 GPUs 21,484 / 6,338 "
          "img/s; DGX-1 8 x V100 16GB batch 192 / 96, 1,376 / 384, 8 GPUs 10,723 / 3,005; DGX "
          "A100 80GB (mxnet-22.10) batch 512, 3,410.52 / 1,055.78, 8 GPUs 26,673.72 / "
          "8,247.44, https://github.com/NVIDIA/DeepLearningExamples/tree/master/MxNet/"
          "Classification/RN50v1.5")
DLPERF = ("OneFlow DLPerf (2020), NVIDIA DeepLearningExamples' ResNet-50 v1.5 measured on 1, 2 "
          "and 4 nodes of 8 x V100-SXM2-16GB (NVLink) with one EDR InfiniBand 100 Gb/s port per "
          "node, the median of 5 runs (MXNet 7), real ImageNet through DALI: TensorFlow 1.15.2 "
          "(NGC 20.03, Horovod 0.19.0, NCCL 2.6.3) FP32 batch 128: 1 GPU 362.44, 4: 1391.28, "
          "8: 2721.98, 16: 5099.42, 32: 9514.64 img/s; AMP batch 224: 945.18, 3546.02, "
          "6903.42, 12021.09, 24734.22; AMP + XLA: 1198.55, 4360.83, 8588.45, 14931.03, "
          "29171.69; AMP + XLA, synthetic data, one node: 1236.9, 4610.43, 9265.83; MXNet "
          "1.6.0 (NGC 20.03, --kv-store horovod, Horovod 0.19.0, NCCL 2.5.6, "
          "HOROVOD_CYCLE_TIME=0.1, fusion 64 MiB, 2 NCCL streams, MXNET_HOROVOD_NUM_GROUPS=16) "
          "FP32 batch 128: 392.24, 1518.04, 3006.98, 5758.49, 11331.93; float16 batch 256: "
          "1393.87, 5158.71, 9621.31, 16219.03, 30713.68; float16 with AMP: 1281.83, 4811.72, "
          "9241.68, 13348.68, 27558.28, https://github.com/Oneflow-Inc/DLPerf (reports/"
          "dlperf_benchmark_test_report_v1.md at 9c9d9e2b; NVIDIADeepLearningExamples/"
          "TensorFlow/Classification/ConvNets/resnet50v1.5/README.md at 912ef9a8; "
          "NVIDIADeepLearningExamples/MxNet/Classification/RN50v1.5/README.md at e8ee99fc)")
HVD288 = ("Horovod issue 288: 2 Dell C4140 x 4 V100, InfiniBand (NCCL 2.2.12), tf_cnn_benchmarks "
          "ResNet-50 batch 128: 1 GPU ~641 img/s, 2x4 GPUs 4,419.71 img/s (86.19 %), "
          "https://github.com/horovod/horovod/issues/288")

ROCE_25 = Network(25 * GBIT, 5e-6, PCIE3, 5e-6)
TCP_25 = Network(25 * GBIT, 30e-6, PCIE3, 5e-6)
TCP_40 = Network(40 * GBIT, 30e-6, PCIE3, 5e-6)
ROCE_40 = Network(40 * GBIT, 5e-6, PCIE3, 5e-6)
PCIE_SERVER = Network(10 * GBIT, 30e-6, PCIE3, 5e-6)  # one server: only its PCIe links count
IB_EDR = Network(100 * GBIT, 2e-6, PCIE3, 5e-6)
A100_NODE = Network(200 * GBIT, 5e-6, NVLINK_A100)
V100_NODE = Network(100 * GBIT, 5e-6, NVLINK_V100)
V100_EDR = Network(100 * GBIT, 2e-6, NVLINK_V100)  # 8 V100 over NVLink, one EDR port per node
PASCAL_NOTE = ("the 128- and 512-GPU figures give no single-GPU throughput: the 2017 baseline "
               "on the same kind of servers is used (batch 64; the maintainers said 32 per GPU "
               "in issue 425, which would make compute shorter and the projection lower)")
AWS_NOTE = ("precision not stated (740 img/s on one V100 is FP16 speed; the repo's script ran "
            "--fp16); 25 Gb/s is p3.16xlarge's nominal Ethernet (TCP, no RDMA). EC2 limits one "
            "TCP flow to 5 Gb/s, or 10 Gb/s inside a cluster placement group "
            "(docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-network-bandwidth.html),"
            " and NCCL of 2018 ran few flows per node")
HVD416_NOTE = ("the Horovod, NCCL and TensorFlow versions are not given (August 2018: cycle "
               "5 ms, fusion 64 MiB, no response cache, NCCL rings assumed); within a server "
               "the 8 GPUs span two PCIe switches and a QPI hop, taken at the 4-GPU PCIe bus "
               "bandwidth; synthetic data not stated (tf_cnn_benchmarks' default)")
HVD889_NOTE = ("real ImageNet through TensorFlow's input pipeline: part of the loss may be "
               "input, which the model has no term for; precision not stated")
MX_NOTE = ("MXNet's Horovod groups the gradients into 16 allreduces "
           "(MXNET_HOROVOD_NUM_GROUPS) rather than fusing by cycle; DGX-2's NVSwitch taken at "
           "DGX-1V's NVLink bus bandwidth; DALI input counted in the throughput")
DLPERF_NOTE = ("real ImageNet through DALI on the GPUs (its decoding shares them with "
               "training; the table of synthetic data shows what input costs at 8 GPUs); the "
               "Horovod settings of the day are assumed where the scripts set none (TensorFlow:"
               " cycle 5 ms, fusion 64 MiB); NCCL over InfiniBand verbs assumed (the README "
               "describes installing the Mellanox drivers in the container, not that NCCL used "
               "them)")
HVD288_NOTE = ("641 img/s on one V100 is FP16 speed (precision not stated); the InfiniBand "
               "speed is not stated (EDR 100 Gb/s assumed); the thread's first command read "
               "real ImageNet TFRecords")


def _pascal(key: str, model: str, gpus: int, net: Network, network: str, transport: str,
            rate: float, efficiency: float, role: str, source: str = HOROVOD_2017,
            why: str = "") -> Figure:
    return Figure(key, source, model, f"{gpus // 4} x 4 Pascal", gpus, 4, network, net,
                  transport, rate, 64, efficiency, role, why=why)


FIGURES: tuple[Figure, ...] = (
    # one NVLink / NVSwitch node (Horovod 0.19 with its response cache, NCCL 2.7)
    Figure("dle-a100-tf32", DLE, "resnet50", "DGX A100, TF32", 8, 8, "NVSwitch", A100_NODE,
           "nvlink", 909, 256, 7000 / (8 * 909), CALIBRATION,
           response_cache=True, algorithm="auto"),
    Figure("dle-a100-amp", DLE, "resnet50", "DGX A100, AMP", 8, 8, "NVSwitch", A100_NODE,
           "nvlink", 2375, 256, 17400 / (8 * 2375), HELD_OUT,
           response_cache=True, algorithm="auto"),
    Figure("dle-v100-amp", DLE, "resnet50", "DGX-1V, AMP", 8, 8, "NVLink", V100_NODE,
           "nvlink", 1270, 256, 9510 / (8 * 1270), HELD_OUT,
           response_cache=True, algorithm="auto"),
    Figure("dle-v100-fp32", DLE, "resnet50", "DGX-1V, FP32", 8, 8, "NVLink", V100_NODE,
           "nvlink", 412, 128, 3170 / (8 * 412), CALIBRATION,
           response_cache=True, algorithm="auto"),
    # Horovod's own 2017 figures: NCCL 2.0 rings across 4-GPU PCIe servers
    _pascal("horovod16-resnet101", "resnet101", 16, ROCE_25, "25 Gb/s RoCE", "rdma", 119.4,
            1746.2 / (16 * 119.4), CALIBRATION),
    _pascal("horovod16-inception3", "inception_v3", 16, ROCE_25, "25 Gb/s RoCE", "rdma", 134.4,
            2022.6 / (16 * 134.4), HELD_OUT),
    _pascal("horovod16-vgg16", "vgg16", 16, ROCE_25, "25 Gb/s RoCE", "rdma", 130.9,
            1787.4 / (16 * 130.9), HELD_OUT),
    _pascal("horovod16tcp-resnet101", "resnet101", 16, TCP_25, "25 Gb/s TCP", "tcp", 119.4,
            1685.1 / (16 * 119.4), CALIBRATION),
    _pascal("horovod16tcp-inception3", "inception_v3", 16, TCP_25, "25 Gb/s TCP", "tcp", 134.4,
            1990.7 / (16 * 134.4), HELD_OUT),
    _pascal("horovod16tcp-vgg16", "vgg16", 16, TCP_25, "25 Gb/s TCP", "tcp", 130.9,
            1308.7 / (16 * 130.9), HELD_OUT),
    _pascal("horovod64-inception3", "inception_v3", 64, TCP_40, "40 Gb/s TCP", "tcp", 148.8,
            7932.1 / (64 * 148.8), CALIBRATION),
    _pascal("horovod64-resnet101", "resnet101", 64, TCP_40, "40 Gb/s TCP", "tcp", 136.0,
            7741.6 / (64 * 136.0), HELD_OUT),
    _pascal("horovod64-vgg16", "vgg16", 64, TCP_40, "40 Gb/s TCP", "tcp", 149.6,
            6084.2 / (64 * 149.6), HELD_OUT),
    _pascal("horovod128-inception3", "inception_v3", 128, ROCE_25, "25 Gb/s RoCE", "rdma",
            134.4, 0.90, CALIBRATION, HOROVOD_SCALE, PASCAL_NOTE),
    _pascal("horovod128-resnet101", "resnet101", 128, ROCE_25, "25 Gb/s RoCE", "rdma", 119.4,
            0.90, HELD_OUT, HOROVOD_SCALE, PASCAL_NOTE),
    _pascal("horovod128-vgg16", "vgg16", 128, ROCE_25, "25 Gb/s RoCE", "rdma", 130.9, 0.79,
            HELD_OUT, HOROVOD_SCALE, PASCAL_NOTE),
    _pascal("horovod512-inception3", "inception_v3", 512, ROCE_25, "25 Gb/s RoCE", "rdma",
            134.4, 0.90, HELD_OUT, HOROVOD_SCALE, PASCAL_NOTE),
    _pascal("horovod512-resnet101", "resnet101", 512, ROCE_25, "25 Gb/s RoCE", "rdma", 119.4,
            0.90, HELD_OUT, HOROVOD_SCALE, PASCAL_NOTE),
    _pascal("horovod512-vgg16", "vgg16", 512, ROCE_25, "25 Gb/s RoCE", "rdma", 130.9, 0.68,
            HELD_OUT, HOROVOD_SCALE, PASCAL_NOTE),
    # users' reports of 2018
    Figure("hvd288-v100", HVD288, "resnet50", "2 x 4 V100 (Dell C4140)", 8, 4,
           "InfiniBand (EDR assumed)", IB_EDR, "rdma", 641, 128, 4419.71 / (8 * 641),
           HELD_OUT, why=HVD288_NOTE),
    Figure("aws-16", AWS, "resnet50", "2 x 8 V100 (p3.16xlarge)", 16, 8, "25 Gb/s TCP",
           Network(25 * GBIT, 30e-6, NVLINK_V100), "tcp", 740, 256, 9860 / (16 * 740),
           HELD_OUT, why=AWS_NOTE),
    Figure("aws-64", AWS, "resnet50", "8 x 8 V100 (p3.16xlarge)", 64, 8, "25 Gb/s TCP",
           Network(25 * GBIT, 30e-6, NVLINK_V100), "tcp", 740, 256, 37000 / (64 * 740),
           HELD_OUT, why=AWS_NOTE),
    # the second held-out set (see the module's docstring): two users' servers of 2018-2019
    Figure("hvd416-4", HVD416, "resnet101", "1 x 4 V100 (PCIe switch)", 4, 4, "PCIe",
           PCIE_SERVER, "pcie", 202.78, 64, 650.92 / (4 * 202.78), HELD_OUT_2, why=HVD416_NOTE),
    Figure("hvd416-16", HVD416, "resnet101", "2 x 8 V100 (PCIe, QPI)", 16, 8,
           "40 Gb/s RoCE", ROCE_40, "rdma", 202.78, 64, 2379.56 / (16 * 202.78), HELD_OUT_2,
           why=HVD416_NOTE),
    Figure("hvd889-4", HVD889, "resnet50", "1 x 4 V100 (PCIe)", 4, 4, "PCIe",
           PCIE_SERVER, "pcie", 3.81 * 64, 64, 2.62 / 3.81,
           HELD_OUT_2, response_cache=True, why=HVD889_NOTE),
    # ... and MXNet's ResNet-50 through Horovod on three NVIDIA machines (Horovod 0.20-0.21)
    *(Figure(f"mx-{machine}-{precision}", DLE_MX, "resnet50", f"{hardware}, {label}", gpus,
             gpus, link, net, "nvlink", rate, batch, total / (gpus * rate), HELD_OUT_2,
             cycle_s=1e-4, response_cache=True, algorithm="auto", why=MX_NOTE)
      for machine, hardware, gpus, link, net, precision, label, batch, rate, total in (
          ("dgx2", "DGX-2", 16, "NVSwitch", V100_NODE, "amp", "AMP", 256, 1492, 21484),
          ("dgx2", "DGX-2", 16, "NVSwitch", V100_NODE, "fp32", "FP32", 128, 417, 6338),
          ("dgx1", "DGX-1V", 8, "NVLink", V100_NODE, "amp", "AMP", 192, 1376, 10723),
          ("dgx1", "DGX-1V", 8, "NVLink", V100_NODE, "fp32", "FP32", 96, 384, 3005),
          ("a100", "DGX A100", 8, "NVSwitch", A100_NODE, "amp", "AMP", 512, 3410.52,
           26673.72),
          ("a100", "DGX A100", 8, "NVSwitch", A100_NODE, "tf32", "TF32", 512, 1055.78,
           8247.44))),
    # the third held-out set (see the module's docstring): one cluster of DGX-1-like nodes
    *(Figure(f"dlperf-{series}-{gpus}", DLPERF, "resnet50",
             f"{gpus // 8 or 1} x {min(gpus, 8)} V100, {label}", gpus, 8,
             "NVLink" if gpus <= 8 else "EDR InfiniBand", V100_EDR,
             "nvlink" if gpus <= 8 else "rdma", rate, batch, total / (gpus * rate), HELD_OUT_3,
             cycle_s=cycle, response_cache=True, algorithm="auto", why=DLPERF_NOTE)
      for series, label, batch, rate, cycle, totals in (
          ("tf-fp32", "TF FP32", 128, 362.44, 5e-3, (1391.28, 2721.98, 5099.42, 9514.64)),
          ("tf-amp", "TF AMP", 224, 945.18, 5e-3, (3546.02, 6903.42, 12021.09, 24734.22)),
          ("tf-amp-xla", "TF AMP+XLA", 224, 1198.55, 5e-3,
           (4360.83, 8588.45, 14931.03, 29171.69)),
          ("tf-amp-xla-synthetic", "TF AMP+XLA, synthetic", 224, 1236.9, 5e-3,
           (4610.43, 9265.83)),
          ("mx-fp32", "MXNet FP32", 128, 392.24, 1e-4, (1518.04, 3006.98, 5758.49, 11331.93)),
          ("mx-fp16", "MXNet FP16", 256, 1393.87, 1e-4,
           (5158.71, 9621.31, 16219.03, 30713.68)),
          ("mx-amp", "MXNet AMP", 256, 1281.83, 1e-4,
           (4811.72, 9241.68, 13348.68, 27558.28)))
      for gpus, total in zip((4, 8, 16, 32), totals, strict=False)),
)
