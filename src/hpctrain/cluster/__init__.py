"""The embedded Slurm cluster: real slurmctld, slurmdbd + MariaDB, munge and four slurmd on
this machine, listening on loopback only. The demo and the tests submit real jobs to it; on a
real cluster it is never needed.

    embedded.py    `hpctrain cluster up|down|status`: the cluster as a whole
    conf.py        slurm.conf, slurmdbd.conf and gres.conf, rendered (pure) from templates/
    daemons.py     starting, identifying and stopping daemon processes
    accounting.py  MariaDB bootstrap and the accounting database user (no secret on argv)
    hosts.py       node1..nodeN in /etc/hosts while the cluster is up
"""
