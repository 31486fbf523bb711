"""One dynamic partitions definition per session kind; the key is the LIMS id as a string."""


import dagster as dg

ophys_session_partitions = dg.DynamicPartitionsDefinition(name="ophys_session")
behavior_session_partitions = dg.DynamicPartitionsDefinition(name="behavior_session")
ecephys_session_partitions = dg.DynamicPartitionsDefinition(name="ecephys_session")
icephys_cell_partitions = dg.DynamicPartitionsDefinition(name="icephys_cell")

PARTITIONS_BY_KIND: dict[str, dg.DynamicPartitionsDefinition] = {
    "ophys_session": ophys_session_partitions,
    "behavior_session": behavior_session_partitions,
    "ecephys_session": ecephys_session_partitions,
    "icephys_cell": icephys_cell_partitions,
}

# Heavy steps (streaming whole movies, writing LFP) share one concurrency pool, limited in dagster.yaml.
HEAVY_POOL = "release_platform_heavy"
