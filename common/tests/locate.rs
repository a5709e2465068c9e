//! `data::locate`: the search order (--data-dir, $SEGKIT_DATA_DIR, the workspace's
//! data/ found from the current directory, the shared folder, a download, generated),
//! on folders made here. One test function: it changes the process's current directory
//! and environment, which the other tests of this binary must not see.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use common::data::locate::{
    confirm_download_from, locate, Consent, DataSetSpec, NotDownloaded, Origin, DATA_DIR_ENV,
};
use common::data::SHARED_DATA_ENV;
use common::workspace::{root_above, workspace_root};

/// A set is a folder holding `marker.txt`.
fn find_root(dir: &Path) -> Result<PathBuf> {
    if dir.join("marker.txt").is_file() {
        Ok(dir.to_path_buf())
    } else {
        bail!("{dir:?} has no marker.txt")
    }
}

fn make_set(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("marker.txt"), "x")?;
    Ok(dir.to_path_buf())
}

fn spec<'a>(download: Option<common::data::locate::Download<'a>>) -> DataSetSpec<'a> {
    DataSetSpec {
        names: &["toy-set"],
        title: "the toy set (marker.txt)",
        find_root: &find_root,
        download,
    }
}

#[test]
fn search_order_and_errors() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let workspace = temp.path().join("clone");
    std::fs::create_dir_all(workspace.join("sub/deeper"))?;
    std::fs::write(workspace.join("Cargo.toml"), "[workspace]\nmembers = []\n")?;
    // A member's manifest without [workspace] must not stop the walk.
    std::fs::write(
        workspace.join("sub/Cargo.toml"),
        "[package]\nname = \"x\"\n",
    )?;
    assert_eq!(
        root_above(&workspace.join("sub/deeper")),
        Some(workspace.clone())
    );
    assert_eq!(root_above(temp.path()), None);

    std::env::set_current_dir(workspace.join("sub/deeper"))?;
    std::env::remove_var(DATA_DIR_ENV);
    std::env::set_var(SHARED_DATA_ENV, temp.path().join("no-shared"));
    std::env::set_var("SEGKIT_OFFLINE", "1");
    assert_eq!(workspace_root(), Some(workspace.clone()));

    // Nothing anywhere and offline: the generated set, and the banner says where it looked.
    let located = locate(&spec(None), None)?;
    assert_eq!(located.origin, Origin::Generated);
    assert!(located.root.is_none());
    let banner = &located.banner;
    assert!(
        banner.contains("toy set") && banner.contains("GENERATED"),
        "{banner}"
    );
    assert!(
        banner.contains(&format!("{:?}", workspace.join("data/toy-set"))),
        "{banner}"
    );
    assert!(banner.contains("no public source"), "{banner}");

    // A download hook is not called while offline, and the banner says why.
    let called = std::cell::Cell::new(false);
    let fetch = |data: &Path| -> Result<PathBuf> {
        called.set(true);
        make_set(&data.join("toy-set"))
    };
    let located = locate(&spec(Some(&fetch)), None)?;
    assert_eq!(located.origin, Origin::Generated);
    assert!(!called.get());
    assert!(
        located.banner.contains("downloads are off"),
        "{}",
        located.banner
    );

    // Online, the hook downloads into the workspace's data/.
    std::env::remove_var("SEGKIT_OFFLINE");
    std::env::remove_var("HF_HUB_OFFLINE");
    // A hook that was not allowed to download (no yes) is no failure: the banner says why.
    let declined = |_: &Path| -> Result<PathBuf> {
        Err(NotDownloaded("the toy set (2.0 GB) needs --download".into()).into())
    };
    let located = locate(&spec(Some(&declined)), None)?;
    assert_eq!(located.origin, Origin::Generated);
    let banner = &located.banner;
    assert!(
        banner.contains("needs --download") && !banner.contains("failed"),
        "{banner}"
    );
    let located = locate(&spec(Some(&fetch)), None)?;
    assert!(called.get());
    assert_eq!(located.origin, Origin::Downloaded);
    assert_eq!(located.root, Some(workspace.join("data/toy-set")));

    // Now it is in data/: found there without a download.
    called.set(false);
    let located = locate(&spec(Some(&fetch)), None)?;
    assert_eq!(located.origin, Origin::Workspace);
    assert!(!called.get());

    // The shared folder comes after the workspace, $SEGKIT_DATA_DIR before it.
    let shared = make_set(&temp.path().join("shared/toy-set"))?;
    std::env::set_var(SHARED_DATA_ENV, temp.path().join("shared"));
    assert_eq!(locate(&spec(None), None)?.origin, Origin::Workspace);
    std::fs::remove_dir_all(workspace.join("data"))?;
    let located = locate(&spec(None), None)?;
    assert_eq!(
        (located.origin, located.root),
        (Origin::Shared, Some(shared))
    );
    let own = make_set(&temp.path().join("mine/toy-set"))?;
    std::env::set_var(DATA_DIR_ENV, temp.path().join("mine"));
    let located = locate(&spec(None), None)?;
    assert_eq!(
        (located.origin, located.root.clone()),
        (Origin::Env, Some(own))
    );
    assert!(located.banner.contains(DATA_DIR_ENV), "{}", located.banner);

    // --data-dir wins, and one that is not the set is an error naming it.
    let given = make_set(&temp.path().join("given"))?;
    let located = locate(&spec(None), Some(&given))?;
    assert_eq!((located.origin, located.root), (Origin::Given, Some(given)));
    let wrong = temp.path().join("wrong");
    let err = format!("{:#}", locate(&spec(None), Some(&wrong)).unwrap_err());
    assert!(
        err.contains("--data-dir") && err.contains("marker.txt"),
        "{err}"
    );
    std::env::remove_var(DATA_DIR_ENV);
    Ok(())
}

fn consent(into: &Path) -> Consent<'_> {
    Consent {
        what: "the toy set (toy.tar)",
        bytes: 1_999_639_040,
        into,
        flag: "--download",
    }
}

#[test]
fn a_large_download_asks_once_and_the_flag_answers_yes() -> Result<()> {
    let into = Path::new("/somewhere/data");
    let ask = consent(into);
    // The flag: no question, even with a terminal that would say no.
    let mut no = std::io::Cursor::new(b"n\n".to_vec());
    confirm_download_from(&ask, true, Some(&mut no))?;
    assert_eq!(no.position(), 0, "the terminal was read");
    // A terminal: Enter, y and yes say yes; anything else no.
    for answer in ["\n", "y\n", "YES\n", ""] {
        let mut terminal = std::io::Cursor::new(answer.as_bytes().to_vec());
        confirm_download_from(&ask, false, Some(&mut terminal))?;
    }
    let mut terminal = std::io::Cursor::new(b"no\n".to_vec());
    let err = confirm_download_from(&ask, false, Some(&mut terminal)).unwrap_err();
    assert!(err.downcast_ref::<NotDownloaded>().is_some(), "{err:#}");
    assert!(format!("{err}").contains("--download"), "{err}");
    // No terminal and no flag: no question; the error says what, how big and the flag.
    let err = confirm_download_from(&ask, false, None).unwrap_err();
    assert!(err.downcast_ref::<NotDownloaded>().is_some(), "{err:#}");
    let text = format!("{err}");
    for needle in [
        "toy.tar",
        "2.0 GB",
        "--download",
        "no terminal",
        "/somewhere/data",
    ] {
        assert!(text.contains(needle), "{text:?} lacks {needle:?}");
    }
    Ok(())
}
