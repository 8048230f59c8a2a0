"""Scaling studies: run one config over node counts (study), aggregate runs into tables
(aggregate), draw them (plots), write the study's README (study_report), and project to
larger clusters with a communication cost model (costmodel, published)."""
