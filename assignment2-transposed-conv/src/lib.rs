//! Assignment 2 of segkit: full-resolution flower segmentation with transposed
//! convolutions (course notebooks "ImSegByConvTranspose" and
//! "ImSegByConvTransSkipConnection"), compared with a skip-connection net and
//! bilinear upsampling.

pub mod config;
pub mod data;
pub mod evaluate;
pub mod model;
pub mod predict;
pub mod report;
pub mod run;
pub mod size_rule;
pub mod training;
