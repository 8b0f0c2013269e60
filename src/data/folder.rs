//! ImageNet-style image folders: `root/train/<class>/*.{png,jpg,jpeg}` and
//! `root/val/<class>/…`.
//!
//! Class index = position of the folder name among the sorted training class
//! folders. Files are listed in sorted order (deterministic sample order) and
//! decoded to RGB lazily by [`Dataset::image`]; at load time every file's
//! header is read, so a non-image or unreadable file fails here, naming it.
//! Files with other extensions are ignored. Every training class must hold at
//! least one image; validation classes must be training classes.

use std::path::{Path, PathBuf};

use super::dataset::{Dataset, Splits};
use super::error::{DataError, Result};

const HINT: &str =
    "fix: expected layout root/train/<class>/*.png|jpg|jpeg and root/val/<class>/...";

/// Loads `root/train` (as `train`) and `root/val` (as `test`).
pub fn load_image_folder(root: &Path) -> Result<Splits> {
    let train_dir = require_dir(&root.join("train"))?;
    let val_dir = require_dir(&root.join("val"))?;
    let classes = list_dirs(&train_dir)?;
    if classes.is_empty() {
        return Err(DataError::Empty {
            path: train_dir,
            what: "class folder".into(),
        });
    }
    let train = load_split(&train_dir, &classes, true)?;
    let val = load_split(&val_dir, &classes, false)?;
    Ok(Splits { train, test: val })
}

fn load_split(dir: &Path, classes: &[String], every_class_nonempty: bool) -> Result<Dataset> {
    let (mut files, mut labels) = (Vec::new(), Vec::new());
    for name in list_dirs(dir)? {
        let class_dir = dir.join(&name);
        let Ok(label) = classes.binary_search(&name) else {
            return Err(DataError::UnknownClass {
                path: class_dir,
                class: name,
                num_train_classes: classes.len(),
            });
        };
        let images = list_images(&class_dir)?;
        if images.is_empty() && every_class_nonempty {
            return Err(DataError::Empty {
                path: class_dir,
                what: "PNG or JPEG image".into(),
            });
        }
        for f in images {
            check_header(&f)?;
            files.push(f);
            labels.push(label as u32);
        }
    }
    Dataset::from_files(files, labels, classes.len(), dir)
}

fn require_dir(dir: &Path) -> Result<PathBuf> {
    if dir.is_dir() {
        Ok(dir.to_path_buf())
    } else {
        Err(DataError::Missing {
            path: dir.to_path_buf(),
            what: "image folder".into(),
            hint: HINT.into(),
        })
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        out.push(entry.map_err(io)?.path());
    }
    out.sort();
    Ok(out)
}

/// Sorted names of the non-hidden sub-directories of `dir`.
fn list_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for p in read_dir_sorted(dir)? {
        if !p.is_dir() {
            continue;
        }
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            return Err(DataError::BadHeader {
                path: p.clone(),
                reason: "class folder name is not valid UTF-8".into(),
            });
        };
        if !name.starts_with('.') {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Sorted `*.png|jpg|jpeg` files (any case) directly in `dir`.
fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let is_image = |p: &PathBuf| {
        p.is_file()
            && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                ["png", "jpg", "jpeg"]
                    .iter()
                    .any(|x| e.eq_ignore_ascii_case(x))
            })
    };
    Ok(read_dir_sorted(dir)?.into_iter().filter(is_image).collect())
}

/// Reads only the header: the file must be a PNG/JPEG with non-zero size.
fn check_header(path: &Path) -> Result<()> {
    let (w, h) = super::dataset::open_image(path)?
        .into_dimensions()
        .map_err(|source| DataError::Decode {
            path: path.to_path_buf(),
            source,
        })?;
    if w == 0 || h == 0 {
        return Err(DataError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("image is {w}x{h}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::write_png;
    use std::fs;

    /// root/{train,val}/{cat,dog}; cat images are red-ish, dog images blue-ish.
    fn make_tree(root: &Path) {
        for split in ["train", "val"] {
            for (class, rgb) in [("dog", [0u8, 0, 200]), ("cat", [200u8, 0, 0])] {
                let d = root.join(split).join(class);
                fs::create_dir_all(&d).unwrap();
                let n = if split == "train" { 3 } else { 1 };
                for i in 0..n {
                    write_png(&d.join(format!("{i}.png")), 5 + i as u32, 4, rgb);
                }
                fs::write(d.join("notes.txt"), "ignored").unwrap();
            }
        }
    }

    #[test]
    fn two_classes_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        make_tree(tmp.path());
        let s = load_image_folder(tmp.path()).unwrap();
        assert_eq!(
            (s.train.len(), s.test.len(), s.train.num_classes()),
            (6, 2, 2)
        );
        assert_eq!(s.train.labels(), &[0, 0, 0, 1, 1, 1]); // cat < dog
        assert_eq!(s.test.labels(), &[0, 1]);
        assert_eq!(s.train.size(), None);
        let img = s.train.image(1).unwrap();
        assert_eq!((img.channels, img.height, img.width), (3, 4, 6));
        assert_eq!((img.data[0], img.data[24], img.data[48]), (200, 0, 0)); // R, G, B planes
        let dog = s.train.image(3).unwrap();
        assert_eq!((dog.data[0], dog.data[20 + 20]), (0, 200));
        assert!(s.train.file(0).unwrap().ends_with("train/cat/0.png"));
    }

    #[test]
    fn corrupt_image_named() {
        let tmp = tempfile::tempdir().unwrap();
        make_tree(tmp.path());
        fs::write(tmp.path().join("train/dog/1.png"), b"not a png at all").unwrap();
        let e = load_image_folder(tmp.path()).unwrap_err();
        assert!(matches!(e, DataError::Decode { .. }), "{e:?}");
        assert!(e.to_string().contains("1.png"), "{e}");
    }

    #[test]
    fn truncated_image_fails_on_decode_naming_file() {
        let tmp = tempfile::tempdir().unwrap();
        make_tree(tmp.path());
        let p = tmp.path().join("train/dog/2.png");
        let b = fs::read(&p).unwrap();
        fs::write(&p, &b[..b.len() - 20]).unwrap();
        let msg = match load_image_folder(tmp.path()) {
            Err(e) => e.to_string(),
            Ok(s) => s.train.image(5).unwrap_err().to_string(),
        };
        assert!(msg.contains("2.png"), "{msg}");
    }

    #[test]
    fn unknown_val_class_and_missing_dirs_named() {
        let tmp = tempfile::tempdir().unwrap();
        make_tree(tmp.path());
        let extra = tmp.path().join("val/emu");
        fs::create_dir(&extra).unwrap();
        let e = load_image_folder(tmp.path()).unwrap_err();
        assert!(
            matches!(e, DataError::UnknownClass { .. }) && e.to_string().contains("emu"),
            "{e}"
        );
        fs::remove_dir(&extra).unwrap();

        fs::remove_dir_all(tmp.path().join("val")).unwrap();
        let e = load_image_folder(tmp.path()).unwrap_err();
        assert!(
            matches!(e, DataError::Missing { .. }) && e.to_string().contains("val"),
            "{e}"
        );
        let e = load_image_folder(&tmp.path().join("absent")).unwrap_err();
        assert!(e.to_string().contains("absent"), "{e}");
    }

    #[test]
    fn empty_class_named() {
        let tmp = tempfile::tempdir().unwrap();
        make_tree(tmp.path());
        fs::create_dir(tmp.path().join("train/eel")).unwrap();
        let e = load_image_folder(tmp.path()).unwrap_err();
        assert!(
            matches!(e, DataError::Empty { .. }) && e.to_string().contains("eel"),
            "{e}"
        );
    }
}
