//! Assignment 2 of segkit: full-resolution flower segmentation with transposed
//! convolutions (course notebooks "ImSegByConvTranspose" and
//! "ImSegByConvTransSkipConnection"), compared with a skip-connection net,
//! bilinear upsampling, max-unpooling with the pools' indices (SegNet) and
//! dilated convolutions (Yu & Koltun 2016), with each net's receptive field.

pub mod config;
pub mod data;
pub mod evaluate;
pub mod model;
pub mod predict;
pub mod report;
pub mod run;
pub mod size_rule;
pub mod training;
