"""Everything that crosses a socket: message records, the codec, peer and client transports."""
