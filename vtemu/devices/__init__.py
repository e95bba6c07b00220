"""Devices, one file each, named after their datasheet, behind a port-I/O / MMIO bus."""
