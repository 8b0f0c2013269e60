//! Which setting wins when a run is resumed: the run's stored config, or the one asked for now.

use toml::{Table, Value};

use crate::config::TrainConfig;
use crate::error::{Error, Result};

/// How one top-level key of a [`TrainConfig`] is treated by [`resume_config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// The requested value wins: it changes no result.
    Honoured,
    /// The schedule and optimizer: a change is refused unless forced.
    Schedule,
    /// This invocation's early stop, never stored: always the requested value, silently.
    Invocation,
    /// The stored value wins; a different requested value is reported as ignored.
    Stored,
}

/// Where the data lives, which device computes, and how many threads load batches change no
/// number a run produces (batches do not depend on the worker count).
const HONOURED: &[&str] = &["data_dir", "backend", "data_loader_workers"];

/// The keys that shape the learning-rate schedule and the optimizer's steps.
const SCHEDULE: &[&str] = &[
    "num_epochs",
    "batch_size",
    "lr",
    "lr_scheduler",
    "warmup_epochs",
    "multistep_lr_milestones",
    "multistep_lr_gamma",
    "optimizer",
    "momentum",
    "nesterov",
    "weight_decay",
];

fn rule(key: &str) -> Rule {
    if HONOURED.contains(&key) {
        Rule::Honoured
    } else if SCHEDULE.contains(&key) {
        Rule::Schedule
    } else if key == "max_steps" {
        Rule::Invocation
    } else {
        Rule::Stored
    }
}

/// The config a resumed run continues with, and what its caller should tell the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Resumed {
    pub config: TrainConfig,
    /// One line per setting whose requested value was taken over the stored one, or ignored.
    pub notes: Vec<String>,
}

/// Decides, setting by setting, whether a resumed run keeps its stored config or takes the
/// requested one (the config and flags of this invocation). It is the one place that rule
/// lives; `usnet train --resume` prints its notes on stderr.
///
/// | setting | on resume |
/// |---|---|
/// | `data_dir`, `backend`, `data_loader_workers` (`--data-dir`, `--backend`) | the requested value, with a note: where the data lives, the device and the loader's threads change no result |
/// | the schedule and optimizer: `num_epochs`, `batch_size`, `lr`, `lr_scheduler`, `warmup_epochs`, `multistep_lr_milestones`, `multistep_lr_gamma`, `optimizer`, `momentum`, `nesterov`, `weight_decay` (`--epochs`, `--batch-size`) | the stored value; a different requested value is [`Error::ResumeChanged`] (the learning rate would jump mid-run), unless `force`, which takes the requested values with a note (the position in training is kept as epoch, batch index and step) |
/// | `max_steps` (`--max-steps`) | the requested value: it is this invocation's early stop and never stored |
/// | everything else: the model, `mode`, the dataset and its subsets and validation split, the widths and their sampling, distillation, seeds, `bn_cal_batch_num` | the stored value; a different requested value is ignored, with a note saying so |
///
/// # Errors
///
/// [`Error::ResumeChanged`] naming each changed schedule setting, old and new, when not
/// `force`; [`Error::InvalidConfig`] when the merged config is not valid.
pub fn resume_config(stored: &TrainConfig, requested: &TrainConfig, force: bool) -> Result<Resumed> {
    let (old, new) = (table(stored)?, table(requested)?);
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let show = |v: Option<&Value>| v.map_or_else(|| "(unset)".to_string(), |v| v.to_string());
    let mut merged = old.clone();
    let (mut notes, mut changed) = (Vec::new(), Vec::new());
    for key in keys {
        let (was, now) = (old.get(key), new.get(key));
        if was == now {
            continue;
        }
        let take = |merged: &mut Table| match now {
            Some(v) => merged.insert(key.clone(), v.clone()),
            None => merged.remove(key),
        };
        match rule(key) {
            Rule::Invocation => {
                take(&mut merged);
            }
            Rule::Honoured => {
                take(&mut merged);
                notes.push(format!("{key} = {} (the run had {})", show(now), show(was)));
            }
            Rule::Schedule if force => {
                take(&mut merged);
                notes.push(format!("{key} = {} replaces the run's {} (forced)", show(now), show(was)));
            }
            Rule::Schedule => changed.push(format!("{key} {} -> {}", show(was), show(now))),
            Rule::Stored => notes.push(format!(
                "ignored {key} = {}: a resumed run keeps its own {key} = {}",
                show(now),
                show(was)
            )),
        }
    }
    if !changed.is_empty() {
        return Err(Error::ResumeChanged { changes: changed.join(", ") });
    }
    let text = toml::to_string(&merged).map_err(|e| Error::InvalidConfig(e.to_string()))?;
    let config = TrainConfig { max_steps: requested.max_steps, ..TrainConfig::from_toml(&text, "the resumed run's config")? };
    Ok(Resumed { config, notes })
}

fn table(config: &TrainConfig) -> Result<Table> {
    let mut t = Table::try_from(config).map_err(|e| Error::InvalidConfig(e.to_string()))?;
    // Never serialised; compared here as the invocation's value.
    t.insert("max_steps".into(), Value::Integer(config.max_steps.min(i64::MAX as u64) as i64));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_CONFIG;

    fn stored() -> TrainConfig {
        TrainConfig::from_toml(DEFAULT_CONFIG, "default").unwrap()
    }

    #[test]
    fn the_same_config_resumes_silently() {
        let r = resume_config(&stored(), &stored(), false).unwrap();
        assert_eq!(r.config, stored());
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn safe_settings_are_honoured_and_said() {
        let req = TrainConfig { data_dir: Some("/elsewhere".into()), data_loader_workers: 3, max_steps: 7, ..stored() };
        let r = resume_config(&stored(), &req, false).unwrap();
        assert_eq!(r.config.data_dir, Some("/elsewhere".into()));
        assert_eq!((r.config.data_loader_workers, r.config.max_steps), (3, 7));
        assert_eq!(r.notes.len(), 2, "max_steps is the invocation's, silently: {:?}", r.notes);
        assert!(r.notes.iter().any(|n| n.contains("data_dir") && n.contains("/elsewhere")), "{:?}", r.notes);
    }

    #[test]
    fn a_changed_schedule_is_refused_unless_forced() {
        let req = TrainConfig { num_epochs: 5, batch_size: 64, ..stored() };
        let err = resume_config(&stored(), &req, false).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::ResumeChanged { .. }), "{text}");
        assert!(text.contains("num_epochs 2 -> 5") && text.contains("batch_size 128 -> 64") && text.contains("force"), "{text}");
        let r = resume_config(&stored(), &req, true).unwrap();
        assert_eq!((r.config.num_epochs, r.config.batch_size), (5, 64));
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
    }

    #[test]
    fn other_settings_keep_the_stored_value_and_say_so() {
        let mut req = TrainConfig { random_seed: 7, inplace_distill: false, ..stored() };
        req.model.num_classes = 12;
        let r = resume_config(&stored(), &req, true).unwrap();
        assert_eq!(r.config, stored(), "even forced, the experiment itself does not change");
        assert_eq!(r.notes.len(), 3, "{:?}", r.notes);
        assert!(r.notes.iter().all(|n| n.starts_with("ignored")), "{:?}", r.notes);
        assert!(r.notes.iter().any(|n| n.contains("random_seed = 7") && n.contains("random_seed = 1995")), "{:?}", r.notes);
    }
}
