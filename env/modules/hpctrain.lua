-- Example Lmod module for hpctrain on a cluster: adapt the module names and the path.
-- Install once (on a node like the compute nodes):  module load hpctrain-build; env/install.sh
help([[hpctrain: HDF5 staging, templated sbatch and Horovod-distributed Keras training.]])
whatis("Name: hpctrain")

-- The toolchain Horovod was built against; load the same one at run time.
depends_on("gcc")
depends_on("openmpi")        -- built with PMIx so that `srun --mpi=pmix` works
-- depends_on("cuda")        -- GPU partitions (HPCTRAIN_GPU=1 env/install.sh)

local root = "/path/to/hpctrain"   -- the checkout that env/install.sh ran in
prepend_path("PATH", pathJoin(root, ".venv/bin"))
setenv("VIRTUAL_ENV", pathJoin(root, ".venv"))
-- Keras 2 (tf-keras): with Keras 3 Horovod silently skips gradient averaging.
setenv("TF_USE_LEGACY_KERAS", "1")
