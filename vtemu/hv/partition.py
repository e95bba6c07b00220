"""A partition: one guest's memory, devices, vCPUs and the hypervisor state that serves them.

The devices are the reference machine's (layout.py), each on the partition's own buses; the
vCPUs are VT-x processors whose exits go to the partition's dispatcher, which looks the
handler up by exit reason (SDM numbers), times it, keeps statistics and the exit history,
and turns the handler's outcome into what the processor does next.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import unicorn.x86_const as U

from vtemu.devices.bus import MmioBus, PortBus
from vtemu.devices.cmos_rtc import CmosRtc
from vtemu.devices.fw_cfg import FwCfg
from vtemu.devices.isa_debug_exit import IsaDebugExit
from vtemu.devices.pic8259 import Pic8259Pair
from vtemu.devices.pit8254 import Pit8254
from vtemu.devices.post_port import PostPort
from vtemu.devices.uart16550 import Uart16550
from vtemu.devices import ata_disk
from vtemu.hv import acpi
from vtemu.hv.cpuid_policy import CpuidPolicy
from vtemu.hv.dma import attach_copy_engine
from vtemu.hv.handlers import HANDLERS, Handler
from vtemu.hv.handlers.io import emulate_string_io
from vtemu.errors import BadInput
from vtemu.hv.memory import NestedPaging, PartitionMemory
from vtemu.hv.paging import PAGING
from vtemu.hv.outcome import Halt, Outcome, Resume, RunEnd, Shutdown
from vtemu.hv.scheduler import DEFAULT_SLICE, VcpuScheduler
from vtemu.hv.smp import SMP_CAPABILITIES, attach_local_apics
from vtemu.hv.stats import ExitStats
from vtemu.machine import layout
from vtemu.machine.clock import GuestClock
from vtemu.machine.code_pages import SharedCodePages
from vtemu.machine.decode import Instruction
from vtemu.machine.memory import HostMemory, HostRegion
from vtemu.machine.vcpu import VCpu
from vtemu.mmu.direct import DirectPaging
from vtemu.vmx.cpu import VmxCpu
from vtemu.vmx.exit import ExitDecision, VmExit
from vtemu.vmx.fields import VmcsField as F
from vtemu.vmx.qualifications import IoDirection

RFLAGS_IF = 1 << 9
_OPEN_BUS = {1: 0xFF, 2: 0xFFFF, 4: 0xFFFFFFFF, 8: 0xFFFFFFFFFFFFFFFF}


@dataclass
class PartitionSpec:
    """What the user asked for: a kernel image and the machine around it."""

    name: str
    kernel: bytes
    cmdline: str = ""
    ram_size: int = layout.DEFAULT_RAM_SIZE
    vcpus: int = 1
    mode: str = "vtx"
    paging: str = "ept"
    files: dict[str, bytes] = field(default_factory=dict)
    serial_input: Callable[[bool], int | None] | None = None   # COM1's receive line (host end)
    disk: str | os.PathLike[str] | None = None   # raw image: the primary-master ATA disk
    slice_instructions: int = DEFAULT_SLICE      # scheduler turn per vCPU (hv/scheduler.py)
    ple: bool = False                            # PAUSE-loop exiting (hv/smp.py)


class Partition:
    def __init__(self, index: int, spec: PartitionSpec, host: HostMemory, rom: HostRegion,
                 console: Callable[[bytes], None]) -> None:
        self.index = index
        self.spec = spec
        self.name = spec.name
        self.host = host
        self.clock = GuestClock()
        self.memory = PartitionMemory(index, spec.ram_size, host, rom)
        self.ports = PortBus()
        self.mmio = MmioBus()
        self.stats = ExitStats()
        self.callout_stats = ExitStats()    # binary translation's calls into the hypervisor
        self.result: Shutdown | None = None
        self._exit_value: int | None = None
        self._pending: dict[int, list[int]] = {}
        self.handlers: dict = dict(HANDLERS)
        # Diagnostics (vtemu.debug) hook in here: inspectors see the exit and its vCPU before the
        # handler changes any register (CPUID's leaf), outside the timed region; observers see
        # the exit, the outcome and the handler's time in ns after it.
        self.exit_inspectors: list[Callable[[VmxCpu, VmExit], None]] = []
        self.exit_observers: list[Callable[[VmExit, Outcome, int], None]] = []
        self.console = console              # COM1's output stream (the synthetic console's too)
        self._attach_devices(console)
        self.copy_engine = attach_copy_engine(self)
        self.cpuid = CpuidPolicy(spec.vcpus)
        self.paging_units: list[tuple[NestedPaging, DirectPaging]] = []
        self.code_pages = SharedCodePages()  # cross-vCPU self-modifying code (machine/code_pages.py)
        self.memory.map_firmware_page("ACPI tables", acpi.ACPI_TABLES_GPA, acpi.tables_page(spec.vcpus))
        self.vcpus = [self._create_vcpu(i) for i in range(spec.vcpus)]
        self.current_cpu = self.vcpus[0]     # whose exit is being handled (banked devices)
        self.local_apics = attach_local_apics(self)
        self.scheduler = VcpuScheduler(spec.vcpus, spec.slice_instructions)
        if spec.paging not in PAGING:
            raise BadInput(f"unknown paging scheme {spec.paging!r} (available: {', '.join(sorted(PAGING))})")
        self.paging = PAGING[spec.paging](self)
        self.handlers.update(self.paging.handlers())

    # --- construction ---------------------------------------------------------------------
    def _attach_devices(self, console: Callable[[bytes], None]) -> None:
        ports = self.ports
        self.pic = Pic8259Pair()
        ports.attach("pic-master", layout.PIC_MASTER_BASE, 2, self.pic.master)
        ports.attach("pic-slave", layout.PIC_SLAVE_BASE, 2, self.pic.slave)
        self.pit = Pit8254(self.clock, self.pic.irq_line(layout.PIT_IRQ))
        ports.attach("pit", layout.PIT_BASE, 4, self.pit)
        self.rtc = CmosRtc(self.clock, self.pic.irq_line(layout.RTC_IRQ), self.spec.ram_size)
        ports.attach("cmos", layout.CMOS_BASE, 2, self.rtc)
        self.post = PostPort()
        ports.attach("post", layout.POST_PORT, 1, self.post)
        self.uart = Uart16550(console, self.pic.irq_line(layout.COM1_IRQ),
                              rx_source=self.spec.serial_input)
        ports.attach("com1", layout.COM1_BASE, 8, self.uart)
        self.debug_exit = IsaDebugExit(self._guest_exit)
        ports.attach("debug-exit", layout.DEBUG_EXIT_PORT, layout.DEBUG_EXIT_SIZE, self.debug_exit,
                     byte_wide=False)
        self.fw_cfg = FwCfg.standard(self.spec.ram_size, self.spec.vcpus, self.spec.kernel,
                                     self.spec.cmdline, files=self.spec.files)
        ports.attach("fw-cfg", layout.FW_CFG_SELECTOR_PORT, 2, self.fw_cfg, byte_wide=False)
        self.disk: ata_disk.AtaDisk | None = None
        if self.spec.disk is not None:
            self.disk = ata_disk.open_disk(self.spec.disk, self.pic.irq_line(ata_disk.PRIMARY_IRQ))
            ports.attach("ata0", ata_disk.PRIMARY_COMMAND_BASE, ata_disk.COMMAND_BLOCK_SIZE,
                         self.disk, byte_wide=False)
            ports.attach("ata0-control", ata_disk.PRIMARY_CONTROL_PORT, 1, self.disk.control)

    def _create_vcpu(self, index: int) -> VmxCpu:
        holder: list[VmxCpu] = []
        translator = NestedPaging(self.host, lambda: holder[0].vmcs.read(F.EPT_POINTER))
        regions = [self.memory.ram, self.memory.rom, *self.memory.firmware_pages]  # EPT can reach nothing else
        vcpu = VCpu(index, self.host, self.clock, translator, regions=regions)
        vcpu.join_code_pages(self.code_pages)
        cpu = VmxCpu(vcpu, self.host, self.ports, self.pic, caps=SMP_CAPABILITIES)
        direct = DirectPaging(self.host)
        cpu.attach_paging(translator, direct)
        self.paging_units.append((translator, direct))
        holder.append(cpu)
        cpu.exit_handler = lambda exit, cpu=cpu: self._dispatch(cpu, exit)
        cpu.string_io_passthrough = self._string_io_passthrough(cpu)  # type: ignore[method-assign]
        self.translator = translator
        return cpu

    def _string_io_passthrough(self, cpu: VmxCpu) -> Callable[..., None]:
        """String I/O the bitmap lets through still needs its iterations performed."""
        def perform(insn: Instruction, port: int, size: int, direction: IoDirection) -> None:
            fault = emulate_string_io(cpu, self.ports, insn, port, size, direction, insn.has_rep)
            if fault is None:
                cpu.complete(insn)
            else:
                cpu.raise_exception(fault.vector, fault.error_code, cr2=fault.cr2, rip=insn.address)
        return perform

    # --- the hypervisor side of an exit ---------------------------------------------------
    def _dispatch(self, cpu: VmxCpu, exit: VmExit) -> ExitDecision:
        self.current_cpu = cpu
        for inspect in self.exit_inspectors:
            inspect(cpu, exit)
        start = time.perf_counter_ns()
        handler: Handler | None = self.handlers.get(exit.reason)
        if handler is None:
            outcome: Outcome = Shutdown(RunEnd.UNHANDLED_EXIT,
                                        f"unhandled VM exit {exit.reason.name} ({int(exit.reason)})",
                                        dump=True)
        else:
            outcome = handler(exit, cpu, self)
        if self._exit_value is not None and not isinstance(outcome, Shutdown):
            outcome = Shutdown(self._exit_value, "the guest wrote to isa-debug-exit")
        elapsed = time.perf_counter_ns() - start
        (self.callout_stats if exit.callout else self.stats).record(cpu.index, exit.reason, elapsed)
        for observer in self.exit_observers:
            observer(exit, outcome, elapsed)
        return self._decide(outcome)

    def _decide(self, outcome: Outcome) -> ExitDecision:
        if isinstance(outcome, Resume):
            return ExitDecision.RESUME
        if isinstance(outcome, Halt):
            return ExitDecision.HALT
        self.end(outcome)
        return ExitDecision.STOP

    def _guest_exit(self, value: int) -> None:
        self._exit_value = value

    def end(self, outcome: Shutdown) -> None:
        """The partition is over; every vCPU stops at its next boundary."""
        if self.result is None:
            self.result = outcome
        for cpu in self.vcpus:
            cpu.stopped = True

    @property
    def ended(self) -> bool:
        return self.result is not None

    # --- services handlers use ------------------------------------------------------------
    def pending_vectors(self, cpu: VmxCpu) -> list[int]:
        """External-interrupt vectors acknowledged on exit, not yet injected (per vCPU)."""
        return self._pending.setdefault(cpu.index, [])

    def interrupt_ready(self, cpu: VmxCpu) -> bool:
        """Could an interrupt be delivered to this vCPU now (for HLT's decision to halt)?"""
        if not cpu.vcpu.read(U.UC_X86_REG_RFLAGS) & RFLAGS_IF:
            return False
        return bool(self.pending_vectors(cpu)) or (cpu.interrupts is not None
                                                    and cpu.interrupts.intr_asserted())

    def physical_read(self, gpa: int, size: int) -> int:
        value = self.mmio.read(gpa, size)
        return _OPEN_BUS[size] if value is None else value

    def physical_write(self, gpa: int, size: int, value: int) -> None:
        self.mmio.write(gpa, size, value)  # unclaimed: open bus or ROM, the write vanishes
