"""High availability: one leader among the replicas through an etcd lease, and fenced actions."""
