//! The layering of configuration sources, on the `config` crate: built-in defaults, the Java
//! properties file, the environment and the command line, each a [`config::Source`] of Folio's
//! own, merged in that order (a later source wins). Every source goes through the known-key
//! table and hands over flat keys — `cluster.shared.secret` and `cluster.shared.secret.previous`
//! are both keys, which `config`'s nesting of dotted paths could not hold, so inside the merge a
//! key's dots are written as slashes ([`merge_key`]), which `config` keeps whole — each value
//! carrying its origin (`default`, `path:line`, `environment variable X`, `command line`). What a source
//! finds wrong (a syntax error, an unknown key) goes to the shared [`Diagnostics`], so the values
//! it could read are still merged and shown.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use config::{Map, Value, ValueKind};

use super::keys::{self, KEYS};
use super::{ConfigError, Source, Warning, hint, read_file};

/// Problems the sources found, shared by them while the layers are merged.
#[derive(Debug, Default)]
pub struct Diagnostics {
    pub warnings: Vec<Warning>,
    pub errors: Vec<ConfigError>,
}

type Sink = Arc<Mutex<Diagnostics>>;

fn note(sink: &Sink) -> std::sync::MutexGuard<'_, Diagnostics> {
    sink.lock().unwrap_or_else(|p| p.into_inner())
}

/// A key as the merge holds it: `config` nests a dotted path, but keeps a key with a slash whole.
pub fn merge_key(key: &str) -> String {
    key.replace('.', "/")
}

/// A value as `config` holds it, its origin written as [`Source`] displays it.
fn value(v: String, origin: &Source) -> Value {
    Value::new(Some(&origin.to_string()), ValueKind::String(v))
}

macro_rules! flat_source {
    ($t:ty) => {
        impl config::Source for $t {
            fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
                Box::new(self.clone())
            }

            fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
                Ok(self.values())
            }
        }
    };
}

/// The known-key table's defaults.
#[derive(Debug, Clone)]
pub struct Defaults;

impl Defaults {
    fn values(&self) -> Map<String, Value> {
        KEYS.iter()
            .filter_map(|spec| {
                let d = spec.default?;
                Some((merge_key(spec.key), value(d.to_string(), &Source::Default)))
            })
            .collect()
    }
}

/// The Java properties file, each value with its file and line. A missing file is an error only
/// when it was named explicitly.
#[derive(Debug, Clone)]
pub struct PropertiesFile {
    pub path: PathBuf,
    pub required: bool,
    pub sink: Sink,
}

impl PropertiesFile {
    fn values(&self) -> Map<String, Value> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.required => {
                return Map::new();
            }
            Err(e) => {
                note(&self.sink).errors.push(ConfigError::File {
                    path: self.path.display().to_string(),
                    reason: e.to_string(),
                });
                return Map::new();
            }
        };
        let read = read_file(&self.path, &bytes);
        let mut d = note(&self.sink);
        d.warnings.extend(read.warnings);
        d.errors.extend(read.errors);
        let shown = self.path.display().to_string();
        read.values
            .into_iter()
            .map(|(key, v, line)| {
                let origin = Source::File {
                    path: shown.clone(),
                    line,
                };
                (merge_key(key), value(v, &origin))
            })
            .collect()
    }
}

/// Environment variables named after the known keys (`cluster.bully.boot` is
/// `CLUSTER_BULLY_BOOT`); others are not configuration.
#[derive(Debug, Clone)]
pub struct Environment {
    pub vars: Vec<(String, String)>,
}

impl Environment {
    fn values(&self) -> Map<String, Value> {
        KEYS.iter()
            .filter_map(|spec| {
                let var = spec.env_var();
                let (_, v) = self.vars.iter().find(|(k, _)| *k == var)?;
                Some((merge_key(spec.key), value(v.clone(), &Source::Env(var))))
            })
            .collect()
    }
}

/// `--set key=value` overrides; an unknown key or a malformed one is an error.
#[derive(Debug, Clone)]
pub struct CommandLine {
    pub overrides: Vec<String>,
    pub sink: Sink,
}

impl CommandLine {
    fn values(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for arg in &self.overrides {
            let Some((key, v)) = arg.split_once('=') else {
                note(&self.sink)
                    .errors
                    .push(ConfigError::BadOverride { arg: arg.clone() });
                continue;
            };
            let key = key.trim();
            match keys::spec(key) {
                Some(spec) => {
                    out.insert(
                        merge_key(spec.key),
                        value(v.trim().to_string(), &Source::CommandLine),
                    );
                }
                None => note(&self.sink).errors.push(ConfigError::UnknownOverride {
                    key: key.to_string(),
                    hint: hint(key),
                }),
            }
        }
        out
    }
}

flat_source!(Defaults);
flat_source!(PropertiesFile);
flat_source!(Environment);
flat_source!(CommandLine);

/// Where a merged value came from, read back from its origin.
pub fn source_of(v: &Value) -> Source {
    match v.origin() {
        None | Some("default") => Source::Default,
        Some("command line") => Source::CommandLine,
        Some(o) => {
            if let Some(var) = o.strip_prefix("environment variable ") {
                return Source::Env(var.to_string());
            }
            match o.rsplit_once(':').map(|(p, l)| (p, l.parse::<usize>())) {
                Some((path, Ok(line))) => Source::File {
                    path: path.to_string(),
                    line,
                },
                _ => Source::Default,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Inputs, resolve_all};

    #[test]
    fn layers_merge_flat_keys_with_their_origins_the_later_winning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("folio.properties");
        std::fs::write(
            &path,
            "cluster.shared.secret=from-file\ncluster.shared.secret.previous=old\nlog.level=debug\n",
        )
        .unwrap();
        let inputs = Inputs {
            file: Some(path.clone()),
            file_required: true,
            env: vec![("LOG_LEVEL".into(), "warn".into())],
            overrides: vec!["cluster.shared.secret=from-cli".into()],
        };
        let (r, errors) = resolve_all(&inputs);
        assert!(errors.is_empty(), "{errors:?}");
        let shown = path.display().to_string();
        assert_eq!(
            r.get("cluster.shared.secret"),
            Some(&("from-cli".to_string(), Source::CommandLine))
        );
        assert_eq!(
            r.get("cluster.shared.secret.previous"),
            Some(&(
                "old".to_string(),
                Source::File {
                    path: shown,
                    line: 2
                }
            )),
            "a key and a longer key beside it both kept"
        );
        assert_eq!(
            r.get("log.level"),
            Some(&("warn".to_string(), Source::Env("LOG_LEVEL".into())))
        );
        assert_eq!(
            r.get("store.cache.mb"),
            Some(&("16".to_string(), Source::Default))
        );
    }

    #[test]
    fn an_origin_reads_back_as_the_source_it_was_written_from() {
        for s in [
            Source::Default,
            Source::CommandLine,
            Source::Env("SERVER_LISTEN".into()),
            Source::File {
                path: "/etc/folio:odd/folio.properties".into(),
                line: 12,
            },
        ] {
            assert_eq!(source_of(&value("x".into(), &s)), s);
        }
    }
}
