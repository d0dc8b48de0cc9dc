//! The settings as the operator sees and changes them (`settings-queries`, `settings-commands`):
//! each with the value in effect and where it comes from; secrets never answered in clear;
//! one-run settings never stored.

use std::collections::BTreeMap;

use crate::auth;
use crate::bindings::agent_relay::relay::settings_types::{RelaySetting, SettingOrigin};
use crate::bindings::agent_relay::relay::store::{self, Setting, SettingSource};
use crate::bindings::agent_relay::relay::types::{Caller, RelayError};
use crate::error::invalid;
use crate::settings::{KNOWN, Kind, Known, parse_number};
use crate::webhooks;

/// A key the relay knows: a fixed one, or an integration source's shared secret.
enum Key {
    Fixed(&'static Known),
    Secret,
}

fn key_names() -> String {
    let mut names: Vec<String> = KNOWN.iter().map(|k| k.key.to_owned()).collect();
    names.push(format!("{}SOURCE", webhooks::SECRET_PREFIX));
    names.join(", ")
}

/// The key as the relay knows it; `invalid` naming the known keys otherwise.
fn lookup(key: &str) -> Result<Key, RelayError> {
    if let Some(known) = KNOWN.iter().find(|k| k.key == key) {
        return Ok(Key::Fixed(known));
    }
    if let Some(source) = key.strip_prefix(webhooks::SECRET_PREFIX) {
        crate::input::id("the source of webhook-secret:SOURCE", source)?;
        return Ok(Key::Secret);
    }
    Err(invalid(format!(
        "unknown setting {key:?}; the settings are {}",
        key_names()
    )))
}

/// Checks `value` for the key; the value to keep (numbers without surrounding spaces).
fn check_value(key: &Key, value: &str) -> Result<String, RelayError> {
    match key {
        Key::Fixed(known) => match known.kind {
            Kind::Number { min, max, .. } => parse_number(value, min, max)
                .map(|n| n.to_string())
                .map_err(|why| invalid(format!("{}: {why}", known.key))),
            Kind::RunSwitch => match value.trim() {
                "on" | "off" => Ok(value.trim().to_owned()),
                _ => Err(invalid(format!(
                    "{}: must be on or off, got {value:?}",
                    known.key
                ))),
            },
        },
        Key::Secret => {
            webhooks::check_secret(value)?;
            if value.is_empty() {
                return Err(invalid(
                    "a webhook secret must not be empty (unset the key to remove it)",
                ));
            }
            Ok(value.to_owned())
        }
    }
}

fn origin(source: SettingSource) -> SettingOrigin {
    match source {
        SettingSource::Run => SettingOrigin::Run,
        SettingSource::Stored => SettingOrigin::Stored,
    }
}

/// The setting `key` as the operator sees it, given what the store holds for it.
fn describe(key: &str, known: &Key, given: Option<&Setting>) -> RelaySetting {
    let given = given.filter(|s| !s.value.is_empty());
    let mut setting = RelaySetting {
        key: key.to_owned(),
        value: None,
        origin: given.map_or(SettingOrigin::Default, |s| origin(s.source)),
        default_value: None,
        secret: false,
        one_run: false,
        about: String::new(),
        ignored: None,
    };
    match known {
        Key::Fixed(known) => {
            setting.about = known.about.to_owned();
            let (default, usable) = match known.kind {
                Kind::Number { default, min, max } => (
                    default.to_string(),
                    given.map(|s| parse_number(&s.value, min, max).map(|n| n.to_string())),
                ),
                Kind::RunSwitch => {
                    setting.one_run = true;
                    let usable = given.map(|s| match (s.source, s.value.as_str()) {
                        (SettingSource::Run, "on" | "off") => Ok(s.value.clone()),
                        (SettingSource::Run, _) => Err("must be on or off".to_owned()),
                        (SettingSource::Stored, _) => Err(format!(
                            "{key} is given for one run only (--setting {key}=on); \
                             `agent-relay settings unset {key}` removes the stored value"
                        )),
                    });
                    ("off".to_owned(), usable)
                }
            };
            match usable {
                Some(Ok(value)) => setting.value = Some(value),
                Some(Err(why)) => {
                    let value = given.map_or("", |s| s.value.as_str());
                    setting.ignored =
                        Some(format!("the stored value {value:?} is not used: {why}"));
                    setting.origin = SettingOrigin::Default;
                    setting.value = Some(default.clone());
                }
                None => setting.value = Some(default.clone()),
            }
            setting.default_value = Some(default);
        }
        Key::Secret => {
            setting.secret = true;
            setting.about = "the shared secret integration SOURCE signs its events with \
                             (X-Hub-Signature-256); never shown"
                .to_owned();
        }
    }
    setting
}

/// What the store holds for exactly `key` (the run's value when it has one).
fn given(key: &str) -> Result<Option<Setting>, RelayError> {
    Ok(store::list_settings(key)?
        .into_iter()
        .find(|s| s.key == key))
}

fn get(key: &str) -> Result<RelaySetting, RelayError> {
    let known = lookup(key)?;
    Ok(describe(key, &known, given(key)?.as_ref()))
}

fn list() -> Result<Vec<RelaySetting>, RelayError> {
    let held: BTreeMap<String, Setting> = store::list_settings("")?
        .into_iter()
        .map(|s| (s.key.clone(), s))
        .collect();
    let fixed = KNOWN
        .iter()
        .map(|known| describe(known.key, &Key::Fixed(known), held.get(known.key)));
    let secrets = held
        .values()
        .filter(|s| s.key.starts_with(webhooks::SECRET_PREFIX) && !s.value.is_empty())
        .map(|s| describe(&s.key, &Key::Secret, Some(s)));
    Ok(fixed.chain(secrets).collect())
}

fn set(key: &str, value: &str) -> Result<RelaySetting, RelayError> {
    let known = lookup(key)?;
    if let Key::Fixed(Known {
        kind: Kind::RunSwitch,
        ..
    }) = known
    {
        return Err(invalid(format!(
            "{key} is never stored: give it for one run only (--setting {key}=on on serve or call)"
        )));
    }
    let value = check_value(&known, value)?;
    store::set_setting(key, &value)?;
    get(key)
}

/// Every fixed setting, then every per-source secret the store holds. Operator only.
pub fn list_all(caller: &Caller) -> Result<Vec<RelaySetting>, RelayError> {
    auth::require_operator(caller)?;
    list()
}

/// One setting. Operator only.
pub fn get_one(caller: &Caller, key: &str) -> Result<RelaySetting, RelayError> {
    auth::require_operator(caller)?;
    get(key)
}

/// The setting as it would be with `value` given for one run (what `--setting` is checked
/// with). Operator only.
pub fn check_run(caller: &Caller, key: &str, value: &str) -> Result<RelaySetting, RelayError> {
    auth::require_operator(caller)?;
    let known = lookup(key)?;
    let value = check_value(&known, value)?;
    let run = Setting {
        key: key.to_owned(),
        value,
        source: SettingSource::Run,
    };
    Ok(describe(key, &known, Some(&run)))
}

/// Stores a setting; one-run settings are refused. Operator only.
pub fn store_one(caller: &Caller, key: &str, value: &str) -> Result<RelaySetting, RelayError> {
    auth::require_operator(caller)?;
    set(key, value)
}

/// Removes a stored setting (the store deletes on an empty value). Operator only.
pub fn unset(caller: &Caller, key: &str) -> Result<RelaySetting, RelayError> {
    auth::require_operator(caller)?;
    lookup(key)?;
    store::set_setting(key, "")?;
    get(key)
}
