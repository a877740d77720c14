"""The node: pure Raft decisions (core) and the Pykka actors that feed them."""
