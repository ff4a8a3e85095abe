//! The inventory as data: the struct tree `node-agent inventory --json` prints
//! and the hub stores.
//!
//! Every fact the machine may not reveal is an `Option` (or an empty `Vec`):
//! `None` means "unknown", never "absent for sure", except where a field says
//! otherwise. No field holds a placeholder string such as "Unknown" or
//! "To Be Filled By O.E.M."; those are dropped where they are read.
//! Field order here is the order in the JSON, so keep it stable.

use serde::{Deserialize, Serialize};

/// Version of the JSON shape; bump it when a field changes meaning or is removed.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything `collect` found on one machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub schema_version: u32,
    pub system: System,
    pub baseboard: Baseboard,
    pub chassis: Chassis,
    pub firmware: Firmware,
    pub cpu: Cpu,
    pub memory: Memory,
    /// Sorted by name.
    pub disks: Vec<Disk>,
    /// Physical interfaces only (those with a `device` link), sorted by name.
    pub nics: Vec<Nic>,
    /// Sorted by address.
    pub pci: Vec<PciDevice>,
    pub tpm: Tpm,
    pub bmc: Bmc,
}

/// SMBIOS type 1 (System Information), or /sys/class/dmi/id when the table is unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct System {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    /// Lowercase canonical form. `None` when the firmware reports all zeros
    /// ("not set") or all 0xFF ("not present"), per SMBIOS 3.x §7.2.1.
    pub uuid: Option<String>,
    pub sku: Option<String>,
    pub family: Option<String>,
}

/// SMBIOS type 2 (Baseboard Information).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseboard {
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub asset_tag: Option<String>,
}

/// SMBIOS type 3 (System Enclosure or Chassis).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chassis {
    pub vendor: Option<String>,
    /// SMBIOS chassis type code (low 7 bits of offset 05h), e.g. 23 = rack mount.
    pub type_code: Option<u8>,
    /// Name of `type_code` from SMBIOS 3.x table 17; `None` for codes the table lacks.
    pub type_name: Option<String>,
    pub version: Option<String>,
    pub serial: Option<String>,
    pub asset_tag: Option<String>,
}

/// How the machine booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirmwareMode {
    Uefi,
    Bios,
}

/// Firmware facts: SMBIOS type 0 plus what the running kernel says about UEFI.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firmware {
    /// UEFI when /sys/firmware/efi exists, BIOS when /sys/firmware exists without it.
    pub mode: Option<FirmwareMode>,
    /// The `SecureBoot` EFI variable; false when efivarfs is mounted and the
    /// firmware has no such variable (no Secure Boot support); `None` when not
    /// UEFI or efivarfs is not mounted.
    pub secure_boot: Option<bool>,
    /// The `SetupMode` EFI variable (true: no platform key enrolled).
    pub setup_mode: Option<bool>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
    /// From the SMBIOS entry point, e.g. "3.0.0" or "2.8".
    pub smbios_version: Option<String>,
}

/// Processors as the kernel sees them, plus the sockets SMBIOS describes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cpu {
    pub vendor: Option<String>,
    pub model: Option<String>,
    /// Distinct physical packages among online CPUs.
    pub sockets: Option<u32>,
    /// Distinct (package, core) pairs among online CPUs.
    pub cores: Option<u32>,
    /// Online logical CPUs.
    pub threads: Option<u32>,
    /// SMBIOS type 4 entries (one per socket, populated or not), in table order.
    pub packages: Vec<CpuPackage>,
}

/// One SMBIOS type 4 (Processor Information) entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuPackage {
    pub socket: Option<String>,
    pub populated: bool,
    pub manufacturer: Option<String>,
    pub version: Option<String>,
    pub max_speed_mhz: Option<u32>,
    pub cores: Option<u32>,
    pub threads: Option<u32>,
}

/// Memory: what the kernel can use, and the modules SMBIOS describes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// `MemTotal` of /proc/meminfo: usable by the kernel, less than installed.
    pub total_bytes: Option<u64>,
    /// Sum of the DIMM sizes; `None` when no DIMM reports a size.
    pub installed_bytes: Option<u64>,
    /// SMBIOS type 17 entries, populated or empty.
    pub slots: Option<u32>,
    /// Populated slots only, in table order.
    pub dimms: Vec<Dimm>,
}

/// One populated SMBIOS type 17 (Memory Device) entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dimm {
    pub locator: Option<String>,
    pub bank_locator: Option<String>,
    pub size_bytes: Option<u64>,
    /// Memory type name from SMBIOS 3.x table 76 ("DDR4", "DDR5", "RAM", ...).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub form_factor: Option<String>,
    /// Maximum speed of the module in MT/s.
    pub speed_mts: Option<u32>,
    /// Speed the memory controller runs it at, in MT/s.
    pub configured_speed_mts: Option<u32>,
    pub manufacturer: Option<String>,
    pub part_number: Option<String>,
    pub serial: Option<String>,
}

/// How a disk is attached, as far as its sysfs device path shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Nvme,
    /// libata (AHCI and other ATA hosts).
    Sata,
    Sas,
    Fc,
    Iscsi,
    Usb,
    Virtio,
    Mmc,
    /// A SCSI host the path does not identify further (hardware RAID, virtio-scsi LUNs, ...).
    Scsi,
    Xen,
}

/// One whole-disk block device (partitions and virtual devices are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    /// Kernel name, e.g. "nvme0n1", "sda", "vda".
    pub name: String,
    pub size_bytes: Option<u64>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// The kernel's `wwid` attribute as it stands ("naa.…", "eui.…", "t10.…", "nvme.…").
    pub wwid: Option<String>,
    /// World wide name as udev's ID_WWN shows it: "0x…" for NAA ids, the wwid for NVMe.
    pub wwn: Option<String>,
    pub rotational: Option<bool>,
    pub removable: Option<bool>,
    pub transport: Option<Transport>,
    /// PCI function of the controller, when the device path goes through one.
    pub pci_address: Option<String>,
    /// Names under /dev/disk/by-id pointing at this disk (empty without udev), sorted.
    pub by_id: Vec<String>,
}

/// One physical network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    /// Permanent MAC (bonding's `perm_hwaddr` when enslaved), lowercase, colon-separated.
    pub mac: Option<String>,
    pub driver: Option<String>,
    /// Link speed in Mb/s; `None` when the link is down or the driver does not say.
    pub speed_mbps: Option<u32>,
    /// `carrier`: true when the link is up; `None` when the interface is administratively down.
    pub link: Option<bool>,
    /// `operstate` as the kernel words it ("up", "down", "unknown", ...).
    pub operstate: Option<String>,
    pub pci_address: Option<String>,
}

/// One PCI function, by ids (names are for the hub to look up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// Domain:bus:device.function, e.g. "0000:00:1f.2".
    pub address: String,
    /// Four lowercase hex digits, as `lspci -n` prints them ("8086").
    pub vendor_id: Option<String>,
    /// Four lowercase hex digits ("10d3").
    pub device_id: Option<String>,
    /// Six lowercase hex digits: base class, subclass, programming interface ("020000").
    pub class: Option<String>,
    pub driver: Option<String>,
}

/// TPM as the kernel and SMBIOS type 43 show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tpm {
    /// True when the kernel has a TPM device or SMBIOS describes one. False means
    /// "not seen", which includes a TPM disabled in firmware.
    pub present: bool,
    /// `tpm_version_major` of the first kernel TPM device, else SMBIOS's spec version.
    pub version: Option<String>,
    /// Kernel devices under /sys/class/tpm, e.g. ["tpm0"].
    pub devices: Vec<String>,
    /// SMBIOS type 43 vendor id (four ASCII characters, e.g. "IFX").
    pub vendor: Option<String>,
}

/// BMC facts visible from the host. This is never the BMC's LAN address unless
/// firmware publishes one: the Redfish Host Interface gives the address the
/// host reaches the BMC at (often link-local); IPMI gives only the local interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bmc {
    /// SMBIOS type 38 entries.
    pub ipmi: Vec<IpmiDevice>,
    /// /dev/ipmi0 (or /dev/ipmi/0, /dev/ipmidev/0) exists: the kernel IPMI driver found the BMC.
    pub ipmi_device_node: bool,
    /// SMBIOS type 42 entries.
    pub redfish_host_interfaces: Vec<RedfishHostInterface>,
}

/// One SMBIOS type 38 (IPMI Device Information) entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpmiDevice {
    /// "kcs", "smic", "bt" or "ssif".
    pub interface: Option<String>,
    /// IPMI specification revision, e.g. "2.0".
    pub spec_version: Option<String>,
    /// Base address of the system interface in hex ("0xca2"): I/O port,
    /// memory address, or SSIF target address.
    pub base_address: Option<String>,
    /// "io" or "memory" for KCS/SMIC/BT.
    pub address_space: Option<String>,
}

/// One SMBIOS type 42 (Management Controller Host Interface) entry, per DMTF DSP0270.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedfishHostInterface {
    /// Interface type code (0x40 = network host interface).
    pub interface_type: u8,
    /// "usb", "pci", "usb-v2", "pci-v2" or "oem".
    pub device_type: Option<String>,
    /// Redfish service address the host reaches the BMC at.
    pub service_address: Option<String>,
    pub service_port: Option<u16>,
    pub service_vlan: Option<u32>,
    pub service_hostname: Option<String>,
    /// "static", "dhcp", "auto" or "host-selected".
    pub service_discovery: Option<String>,
}
