//! TPM presence and version: the kernel's TPM devices (/sys/class/tpm) and
//! SMBIOS type 43. Either one is enough to call a TPM present; neither
//! means "not seen" (a TPM disabled in firmware looks the same).

use super::model::Tpm;
use super::smbios::Smbios;
use super::source::{Source, read_text};

pub const SYS_TPM: &str = "/sys/class/tpm";

pub fn collect(src: &dyn Source, smb: &Smbios) -> Tpm {
    let devices: Vec<String> = src
        .list(SYS_TPM)
        .into_iter()
        .filter(|n| {
            n.strip_prefix("tpm")
                .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    // tpm_version_major exists since Linux 5.6; older kernels leave the version to SMBIOS.
    let kernel_version = devices.first().and_then(|d| {
        let major = read_text(src, &format!("{SYS_TPM}/{d}/tpm_version_major"))?;
        match major.as_str() {
            "1" => Some("1.2".to_string()),
            "2" => Some("2.0".to_string()),
            _ => None,
        }
    });
    let smbios_tpm = smb.tpm.first();
    Tpm {
        present: !devices.is_empty() || smbios_tpm.is_some(),
        version: kernel_version.or_else(|| smbios_tpm.and_then(|t| t.spec_version.clone())),
        devices,
        vendor: smbios_tpm.and_then(|t| t.vendor.clone()),
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // case tables are tuples on purpose
mod tests {
    use super::super::fixture::Fixture;
    use super::super::smbios::TpmInfo;
    use super::*;

    #[test]
    fn sources_combine() {
        let with_smbios = Smbios {
            tpm: vec![TpmInfo {
                vendor: Some("IFX".into()),
                spec_version: Some("2.0".into()),
            }],
            ..Smbios::default()
        };
        let cases: &[(&str, &[(&str, &[u8])], &Smbios, bool, Option<&str>)] = &[
            ("nothing", &[], &Smbios::default(), false, None),
            (
                "kernel tpm2",
                &[("/sys/class/tpm/tpm0/tpm_version_major", b"2\n")],
                &Smbios::default(),
                true,
                Some("2.0"),
            ),
            (
                "kernel, no version file",
                &[("/sys/class/tpm/tpm0/dev", b"253:0\n")],
                &Smbios::default(),
                true,
                None,
            ),
            ("smbios only", &[], &with_smbios, true, Some("2.0")),
            (
                "kernel garbage version",
                &[("/sys/class/tpm/tpm0/tpm_version_major", b"x\n")],
                &Smbios::default(),
                true,
                None,
            ),
            (
                "not a tpm",
                &[("/sys/class/tpm/tpmrm0/dev", b"1\n")],
                &Smbios::default(),
                false,
                None,
            ),
        ];
        for (name, files, smb, present, version) in cases {
            let got = collect(&Fixture::from_files(files), smb);
            assert_eq!(
                (got.present, got.version.as_deref()),
                (*present, *version),
                "case {name}"
            );
        }
    }
}
