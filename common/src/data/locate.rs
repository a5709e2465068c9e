//! One way to find a named data set, the same in every program: `--data-dir`, then
//! `$SEGKIT_DATA_DIR/<name>`, then `data/<name>` in the workspace found at run time,
//! then the course's shared folder (`$SEGKIT_SHARED_DATA` or `../shared/data`), then a
//! download into `data/` when a source is known and the network is allowed, else the
//! program's generated set, announced in one banner.
//!
//! A large download asks first ([`confirm_download`]): in a terminal once, `[Y/n]`; a
//! flag answers yes; without either the hook returns [`NotDownloaded`] and the banner
//! says what is missing, how big it is and which flag fetches it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::data::shared_data_dir;
use crate::workspace::workspace_data_dir;
use crate::Result;

/// The environment variable naming a folder of data sets (laid out as `data/`).
pub const DATA_DIR_ENV: &str = "SEGKIT_DATA_DIR";

/// Where a run's data came from; `metrics.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `--data-dir`.
    Given,
    /// `$SEGKIT_DATA_DIR`.
    Env,
    /// The workspace's `data/`.
    Workspace,
    /// The course's shared folder.
    Shared,
    /// Downloaded into the workspace's `data/` by this run.
    Downloaded,
    /// Nothing found: the program's generated set.
    Generated,
}

/// A fetcher of a data set: given the workspace's `data/` folder, it downloads the set
/// there and returns the folder it wrote.
pub type Download<'a> = &'a dyn Fn(&Path) -> Result<PathBuf>;

/// What a program knows of the data set it wants.
pub struct DataSetSpec<'a> {
    /// Folder names of the set inside a data folder, tried in order.
    pub names: &'a [&'a str],
    /// What the set is and what its folder holds, for the banner
    /// (`"the flower patches (Positive/, Negative/, flower.jpg)"`).
    pub title: &'a str,
    /// The set's root inside a candidate folder, or why the folder is not the set.
    pub find_root: &'a dyn Fn(&Path) -> Result<PathBuf>,
    /// How to fetch the set, when a public source is known.
    pub download: Option<Download<'a>>,
}

/// The data a run will read: where it is and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Located {
    pub origin: Origin,
    /// The set's root; `None` for the generated set.
    pub root: Option<PathBuf>,
    /// The one line (or, for the generated set, the warning) a program prints.
    #[serde(skip)]
    pub banner: String,
}

impl Located {
    /// True when the program must run on its generated set.
    pub fn is_generated(&self) -> bool {
        self.origin == Origin::Generated
    }
}

/// Finds the data set described by `spec` in the order of the module documentation.
/// A `given` folder that does not hold the set is an error; a failed download falls
/// back to the generated set and says why.
pub fn locate(spec: &DataSetSpec, given: Option<&Path>) -> Result<Located> {
    locate_noting(spec, given, None)
}

/// [`locate`], and when downloads are off the banner adds `offline_help`: what the
/// download would fetch, from which manifest, and where to put the files
/// (`common::data::manifest::ManifestSet::offline_help`).
pub fn locate_noting(
    spec: &DataSetSpec,
    given: Option<&Path>,
    offline_help: Option<&str>,
) -> Result<Located> {
    if let Some(dir) = given {
        let root = (spec.find_root)(dir).with_context(|| format!("--data-dir {dir:?}"))?;
        return Ok(found(Origin::Given, root));
    }
    let mut looked = Vec::new();
    for (origin, base) in bases() {
        for name in spec.names {
            let candidate = base.join(name);
            if let Ok(root) = (spec.find_root)(&candidate) {
                return Ok(found(origin, root));
            }
            looked.push(candidate);
        }
    }
    let mut why = String::from("no public source of this set is known");
    if let Some(download) = spec.download {
        match try_download(spec, download, offline_help) {
            Ok(root) => return Ok(found(Origin::Downloaded, root)),
            Err(err) if err.downcast_ref::<NotDownloaded>().is_some() => why = format!("{err:#}"),
            Err(err) => why = format!("the download failed: {err:#}"),
        }
    }
    Ok(generated(spec, &looked, &why))
}

/// The folders that may hold data sets, in the order they are searched.
fn bases() -> Vec<(Origin, PathBuf)> {
    let mut bases = Vec::new();
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV) {
        bases.push((Origin::Env, PathBuf::from(dir)));
    }
    bases.push((Origin::Workspace, workspace_data_dir()));
    if let Some(dir) = shared_data_dir() {
        bases.push((Origin::Shared, dir));
    }
    bases
}

fn try_download(
    spec: &DataSetSpec,
    download: Download,
    offline_help: Option<&str>,
) -> Result<PathBuf> {
    use crate::data::fetch::{is_offline, HF_OFFLINE_ENV, OFFLINE_ENV};
    if is_offline() {
        match offline_help {
            Some(help) => {
                bail!("downloads are off ({OFFLINE_ENV} or {HF_OFFLINE_ENV} is set): {help}")
            }
            None => bail!("downloads are off ({OFFLINE_ENV} or {HF_OFFLINE_ENV} is set)"),
        }
    }
    let written = download(&workspace_data_dir())?;
    (spec.find_root)(&written).with_context(|| format!("after downloading into {written:?}"))
}

/// A download that was not made because nobody said yes to it (not a failure): its
/// text says what is missing, how big it is and how to fetch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotDownloaded(pub String);

impl std::fmt::Display for NotDownloaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotDownloaded {}

/// A large download a program asks about before it starts.
#[derive(Debug, Clone, Copy)]
pub struct Consent<'a> {
    /// What would be fetched (`"PASCAL VOC 2012 (VOCtrainval_11-May-2012.tar)"`).
    pub what: &'a str,
    /// Its size in bytes.
    pub bytes: u64,
    /// Where it would go.
    pub into: &'a Path,
    /// The flag that answers yes (`"--download"`).
    pub flag: &'a str,
}

/// Asks once on the terminal before the download `consent` describes: `Ok` when `yes`
/// (the flag was given) or the answer is empty, `y` or `yes`; else [`NotDownloaded`].
/// Without a terminal on stdin it does not ask and returns [`NotDownloaded`] naming the flag.
pub fn confirm_download(consent: &Consent, yes: bool) -> Result<()> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if yes || !stdin.is_terminal() {
        return confirm_download_from(consent, yes, None);
    }
    let mut lock = stdin.lock();
    confirm_download_from(consent, yes, Some(&mut lock))
}

/// [`confirm_download`] with the terminal given: `None` when there is none, else where
/// the answer is read from (tests pass a `Cursor`).
pub fn confirm_download_from(
    consent: &Consent,
    yes: bool,
    terminal: Option<&mut dyn std::io::BufRead>,
) -> Result<()> {
    let Consent {
        what,
        bytes,
        into,
        flag,
    } = *consent;
    let size = format!("{:.1} GB", bytes as f64 / 1e9);
    if yes {
        return Ok(());
    }
    let Some(terminal) = terminal else {
        return Err(NotDownloaded(format!(
            "{what} ({size}) is not downloaded without a yes: there is no terminal to ask, \
             so pass {flag} to fetch it into {into:?}"
        ))
        .into());
    };
    eprint!("{what} is not on this machine. Download it ({size}) into {into:?} now? [Y/n] ");
    let mut answer = String::new();
    terminal
        .read_line(&mut answer)
        .context("cannot read the answer from the terminal")?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "" | "y" | "yes" => Ok(()),
        _ => Err(NotDownloaded(format!(
            "{what} ({size}) was not downloaded: the answer was no; pass {flag} to fetch it into {into:?}"
        ))
        .into()),
    }
}

fn found(origin: Origin, root: PathBuf) -> Located {
    let banner = format!("data: {root:?} ({})", origin_name(origin));
    Located {
        origin,
        root: Some(root),
        banner,
    }
}

fn generated(spec: &DataSetSpec, looked: &[PathBuf], why: &str) -> Located {
    let looked: Vec<String> = looked.iter().map(|p| format!("{p:?}")).collect();
    let banner = format!(
        "\n!!! {} not found; looked in {}, and {why}.\n\
         !!! Put it in data/{}, pass --data-dir DIR, or set {DATA_DIR_ENV} (see data/README.md).\n\
         !!! RUNNING ON GENERATED DATA INSTEAD: the figures below say nothing about the real set.\n",
        spec.title,
        looked.join(", "),
        spec.names.first().copied().unwrap_or("<name>"),
    );
    Located {
        origin: Origin::Generated,
        root: None,
        banner,
    }
}

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Given => "--data-dir",
        Origin::Env => DATA_DIR_ENV,
        Origin::Workspace => "the workspace's data/",
        Origin::Shared => "the course's shared data",
        Origin::Downloaded => "downloaded into data/",
        Origin::Generated => "generated",
    }
}
