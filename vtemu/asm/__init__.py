"""Guest toolchain around Keystone: includes, macros, multiboot packaging, round-trip checks."""
