//! namespace-offloading's benchmarks, run by `scripts/bench`. Every figure is taken beside a
//! baseline measured in the same run on the same machine, because on a shared machine an
//! absolute time is noise and a ratio is not (see docs/benchmarks.md).
#![forbid(unsafe_code)]

pub mod admission;
pub mod baseline;
pub mod chart;
pub mod criterion;
pub mod fixtures;
pub mod kube_reference;
pub mod load;
pub mod pods;
pub mod proc;
pub mod report;
pub mod scale;
pub mod setup;
