//! `candor calibrate`: fit every calibrator of candor-calib on the calibration part of a run's
//! records and measure both signals on the test part, writing `calibration.json` (see
//! [`results`]) for `candor report`.

pub mod results;
