//! Assignment 3: VGG zoom-out features (hypercolumns), sparse sampling and a
//! 1x1-conv head for semantic segmentation on PASCAL VOC-layout data
//! (Mostajabi et al. 2015; Hariharan et al. 2015).

pub mod config;
pub mod data;
pub mod evaluate;
pub mod features;
pub mod model;
pub mod predict;
pub mod report;
pub mod run;
pub mod taps;
pub mod training;
pub mod weights;
