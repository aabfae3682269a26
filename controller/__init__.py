"""qscale controller: queue metrics -> scaling policy -> Kubernetes actuation."""
