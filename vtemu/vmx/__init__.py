"""The VT-x boundary: VMCS, controls, exit reasons and qualifications, VM entry and exit."""
