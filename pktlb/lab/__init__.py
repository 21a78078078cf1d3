"""The lab: network-namespace topologies (netns/lab.toml) built, supervised, inspected and removed."""
