//! The sampling and capture settings of the data plane (map `observe_config`)
//! and its counters (`observe_stats`): sFlow's sampling rate and the filter
//! of the one capture that may be armed. Every change rewrites the whole
//! entry, so the sampling rate and the capture filter never clobber each other.
use std::path::Path;

use aya::maps::{Array, MapData, PerCpuArray};
use pop_common::{maps as names, ObserveStat, PopObserveConfig};

use super::maps::{map_err, open};
use super::DataplaneError;

/// Handles on `observe_config` and `observe_stats`, and what was written.
pub struct ObserveMaps {
    config: Array<MapData, PopObserveConfig>,
    stats: PerCpuArray<MapData, u64>,
    current: PopObserveConfig,
}

impl ObserveMaps {
    /// Opens the maps pinned in `dir` and reads the entry back.
    pub fn open(dir: &Path) -> Result<Self, DataplaneError> {
        let config: Array<MapData, PopObserveConfig> =
            Array::try_from(open(dir, names::OBSERVE_CONFIG)?)
                .map_err(map_err(names::OBSERVE_CONFIG))?;
        let stats = PerCpuArray::try_from(open(dir, names::OBSERVE_STATS)?)
            .map_err(map_err(names::OBSERVE_STATS))?;
        let current = config.get(&0, 0).unwrap_or_default();
        Ok(Self {
            config,
            stats,
            current,
        })
    }

    fn write(&mut self, want: PopObserveConfig) -> Result<(), DataplaneError> {
        if want != self.current {
            self.config
                .set(0, want, 0)
                .map_err(map_err(names::OBSERVE_CONFIG))?;
            self.current = want;
        }
        Ok(())
    }

    /// Samples 1 in `rate` packets at ingress; 0 stops sampling.
    pub fn set_sampling_rate(&mut self, rate: u32) -> Result<(), DataplaneError> {
        self.write(PopObserveConfig {
            sampling_rate: rate,
            ..self.current
        })
    }

    /// Arms a capture with these `capture*` fields (`capture` with
    /// `CAPTURE_ON`), or disarms it with `None`.
    pub fn set_capture(&mut self, filter: Option<PopObserveConfig>) -> Result<(), DataplaneError> {
        let f = filter.unwrap_or_default();
        self.write(PopObserveConfig {
            sampling_rate: self.current.sampling_rate,
            ..f
        })
    }

    /// Whether a capture is armed.
    pub fn capture_armed(&self) -> bool {
        self.current.capture != 0
    }

    /// A counter, summed over CPUs.
    pub fn stat(&self, stat: ObserveStat) -> u64 {
        self.stats
            .get(&(stat as u32), 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}
