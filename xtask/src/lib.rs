//! The course kit of segkit: handouts with the solutions taken out
//! (`cargo xtask handout`) and an autograder that scores them (`cargo xtask grade`).
//! The tasks are in `course.toml`; the solutions are marked in the reference code.

pub mod autograder;
pub mod course;
pub mod grade;
pub mod handout;
pub mod lexer;
pub mod markers;
pub mod readme;
pub mod report;
pub mod strip;
pub mod tree;
pub mod verify;
