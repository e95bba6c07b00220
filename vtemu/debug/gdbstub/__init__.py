"""A GDB remote-serial-protocol stub over TCP (`vtemu run --gdb HOST:PORT`)."""
