"""What survives a crash: the RocksDB log and stable state, snapshot files."""
