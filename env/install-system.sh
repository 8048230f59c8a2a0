#!/usr/bin/env bash
# Debian system packages for a laptop or CI machine: Open MPI (with PMIx), the
# compilers Horovod's build needs, the Slurm daemons + munge + slurmdbd/MariaDB
# for the embedded test cluster, and the real Fashion-MNIST data set.
# On a real cluster skip this script and `module load` instead (see env/modules/).
set -euo pipefail

pkgs=(
  openmpi-bin libopenmpi-dev cmake g++ make            # MPI + Horovod build
  slurmctld slurmd slurm-client slurmdbd munge          # embedded Slurm cluster
  mariadb-server                                        # slurmdbd accounting store
  dataset-fashion-mnist                                 # real data, offline
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-system: all ${#pkgs[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-system: done"
