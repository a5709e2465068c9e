//! Device choice: `cpu`, `cuda` (cargo feature `cuda`) or `auto`.

use std::str::FromStr;

use candle::Device;

/// Which device a program asks for on its command line.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when the binary was built with `--features cuda` and a GPU answers, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => anyhow::bail!("unknown device {other:?}: use cpu, cuda or auto"),
        }
    }
}

impl std::fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
        };
        f.write_str(name)
    }
}

/// Opens the device a user asked for; `cuda` without the cargo feature is an error
/// that says how to build with it. Opening the CPU also tunes the allocator for training
/// ([`crate::alloc::reuse_freed_memory`]).
pub fn open_device(choice: DeviceChoice) -> anyhow::Result<Device> {
    let device = open(choice)?;
    if device.is_cpu() {
        crate::alloc::reuse_freed_memory();
    }
    Ok(device)
}

fn open(choice: DeviceChoice) -> anyhow::Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda => {
            if !candle::utils::cuda_is_available() {
                anyhow::bail!(
                    "--device cuda asked for, but this binary was built without CUDA: \
                     rebuild with `--features cuda` (needs the CUDA toolkit and nvcc)"
                );
            }
            Ok(Device::new_cuda(0)?)
        }
        DeviceChoice::Auto => {
            if candle::utils::cuda_is_available() {
                if let Ok(device) = Device::new_cuda(0) {
                    return Ok(device);
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// A short human name for a device, for logs and `config.json`.
pub fn device_name(device: &Device) -> &'static str {
    if device.is_cuda() {
        "cuda"
    } else {
        "cpu"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_unknown() {
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        let err = "tpu".parse::<DeviceChoice>().unwrap_err().to_string();
        assert!(err.contains("tpu"), "{err}");
    }

    #[test]
    fn cpu_always_opens() {
        assert!(open_device(DeviceChoice::Cpu).unwrap().is_cpu());
        // Without the cuda feature, auto must fall back to the CPU.
        #[cfg(not(feature = "cuda"))]
        assert!(open_device(DeviceChoice::Auto).unwrap().is_cpu());
    }
}
