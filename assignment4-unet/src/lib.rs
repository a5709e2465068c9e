//! Assignment 4: U-Net (Ronneberger et al. 2015), as milesial/Pytorch-UNet, trained
//! on the ISBI 2012 electron-microscopy membrane images it was invented for.

pub mod augment;
pub mod config;
pub mod data;
pub mod evaluate;
pub mod model;
pub mod predict;
pub mod rand_score;
pub mod report;
pub mod run;
pub mod tiling;
pub mod training;
pub mod weight_map;
