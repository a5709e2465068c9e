//! Assignment 1: a 32x32 flower/background patch classifier turned into a fully
//! convolutional segmenter (the lecture's "ImSegFromClassification").

pub mod config;
pub mod data;
pub mod evaluate;
pub mod model;
pub mod predict;
pub mod report;
pub mod run;
pub mod scene;
pub mod segment;
pub mod training;
