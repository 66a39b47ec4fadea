"""The training engine shared by every subcommand: the only place that jits and shards."""
