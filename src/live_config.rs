//! Reloading the `--config` file while running: the injection settings and the policy section
//! take effect without a restart; a file that no longer parses or validates keeps the last good
//! settings (and the reason is logged by [`crate::reload::run`]).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::admission::injection::InjectionSettings;
use crate::policy::PolicySettings;
use crate::reload::{LastRefused, ReloadOutcome, Reloadable};
use crate::settings::{self, Settings};

/// The file's sections that take effect while running (but `injection.annotationPrefix`).
const LIVE_SECTIONS: [&str; 2] = ["injection", "policy"];

/// Called with the new policy section whenever it changes.
pub type PolicyHook = Box<dyn Fn(&PolicySettings) + Send + Sync>;

/// Re-reads the config file when its bytes change and applies what can change live.
pub struct ConfigReloader {
    path: PathBuf,
    last_text: String,
    /// The read error last reported (a file that cannot be read is counted once, like bad text).
    unreadable: LastRefused,
    current: Settings,
    injection: Arc<ArcSwap<InjectionSettings>>,
    on_policy: Vec<PolicyHook>,
}

impl ConfigReloader {
    /// `settings` are the ones the server started with (resolved from `path` and the flags);
    /// `injection` is the live copy the mutating webhook reads.
    pub fn new(
        path: PathBuf,
        settings: Settings,
        injection: Arc<ArcSwap<InjectionSettings>>,
    ) -> Self {
        let last_text = settings::read_config_file(&path).unwrap_or_default();
        Self {
            path,
            last_text,
            unreadable: LastRefused::default(),
            current: settings,
            injection,
            on_policy: Vec::new(),
        }
    }

    /// Registers a consumer of policy changes (the validating webhook).
    pub fn on_policy(mut self, hook: impl Fn(&PolicySettings) + Send + Sync + 'static) -> Self {
        self.on_policy.push(Box::new(hook));
        self
    }

    /// The settings in effect (after the last good reload).
    pub fn current(&self) -> &Settings {
        &self.current
    }

    /// One check: apply the file when its bytes changed and it still validates.
    pub fn check(&mut self) -> ReloadOutcome {
        let text = match settings::read_config_file(&self.path) {
            Ok(text) => text,
            Err(e) => {
                let reason = e.to_string();
                return self.unreadable.unreadable(reason);
            }
        };
        self.unreadable.forget();
        if text == self.last_text {
            return ReloadOutcome::Unchanged;
        }
        let next = Settings::parse(Some(&self.path), &text, self.current.flags.clone());
        // Remember this text even when it is rejected, so a broken file is reported once (not
        // every tick); the next edit is looked at again.
        self.last_text = text;
        let mut next = match next {
            Ok(s) => s,
            Err(e) => return ReloadOutcome::Failed(e.to_string()),
        };

        let restart_needed = self.restart_needed(&next);
        if !restart_needed.is_empty() {
            tracing::warn!(
                file = %self.path.display(),
                settings = %restart_needed.join(", "),
                "changed in the config file; these take effect after a restart"
            );
        }
        // The annotation prefix is also how ServiceAccounts are read; a half-applied change would
        // mix two prefixes, so it waits for the restart too.
        next.injection.annotation_prefix = self.current.injection.annotation_prefix.clone();

        if next.injection != self.current.injection {
            self.injection.store(Arc::new(next.injection.clone()));
            tracing::info!(file = %self.path.display(), "injection settings updated");
        }
        if next.policy != self.current.policy {
            for hook in &self.on_policy {
                hook(&next.policy);
            }
            tracing::info!(file = %self.path.display(), "policy updated");
        }
        self.current = next;
        ReloadOutcome::Reloaded
    }

    /// The settings that changed but are only read at start-up: every key of the file outside
    /// [`LIVE_SECTIONS`], compared as the file states them (a new setting needs no entry here).
    fn restart_needed(&self, next: &Settings) -> Vec<String> {
        let as_file = |s: &Settings| match serde_json::to_value(s) {
            Ok(serde_json::Value::Object(keys)) => keys,
            _ => serde_json::Map::new(),
        };
        let (now, next_keys) = (as_file(&self.current), as_file(next));
        let mut changed: Vec<String> = now
            .iter()
            .filter(|(key, value)| {
                !LIVE_SECTIONS.contains(&key.as_str()) && next_keys.get(*key) != Some(*value)
            })
            .map(|(key, _)| key.clone())
            .collect();
        if self.current.injection.annotation_prefix != next.injection.annotation_prefix {
            changed.push("injection.annotationPrefix".into());
        }
        changed
    }
}

impl Reloadable for ConfigReloader {
    fn what(&self) -> String {
        format!("config file {}", self.path.display())
    }

    fn check(&mut self) -> ReloadOutcome {
        ConfigReloader::check(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyMode;
    use crate::settings::Flags;
    use std::sync::Mutex;

    /// Starts on the file at `path` with `flags` (besides `--config` and `--self-signed`).
    fn start(path: &std::path::Path, flags: &[&str]) -> (ConfigReloader, Settings) {
        let config = format!("--config={}", path.display());
        let args = [config.as_str(), "--self-signed"]
            .into_iter()
            .chain(flags.iter().copied());
        let settings = Settings::load(Flags::parse(args).unwrap()).unwrap();
        let live = Arc::new(ArcSwap::from_pointee(settings.injection.clone()));
        (
            ConfigReloader::new(path.to_owned(), settings.clone(), live),
            settings,
        )
    }

    #[test]
    fn injection_changes_apply_and_a_broken_file_keeps_the_last_good_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "injection:\n  tokenExpiration: 3600\n").unwrap();
        let (mut reloader, _) = start(&path, &[]);
        let live = reloader.injection.clone();
        assert_eq!(reloader.check(), ReloadOutcome::Unchanged);

        std::fs::write(
            &path,
            "injection:\n  tokenExpiration: 7200\n  awsDefaultRegion: eu-west-1\n",
        )
        .unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        assert_eq!(live.load().token_expiration, 7200);
        assert_eq!(live.load().aws_default_region.as_deref(), Some("eu-west-1"));

        // A typo must not silently change anything (docs/contract.md §8: unknown keys are errors).
        std::fs::write(&path, "injection:\n  tokenExpiraton: 900\n").unwrap();
        match reloader.check() {
            ReloadOutcome::Failed(e) => assert!(e.contains("tokenExpiraton"), "{e}"),
            other => panic!("expected a failure, got {other:?}"),
        }
        assert_eq!(live.load().token_expiration, 7200);
        // Reported once, not on every tick.
        assert_eq!(reloader.check(), ReloadOutcome::Unchanged);

        // Values that parse but do not validate are refused too.
        std::fs::write(&path, "injection:\n  tokenMountPath: relative/path\n").unwrap();
        assert!(matches!(reloader.check(), ReloadOutcome::Failed(_)));
        assert_eq!(live.load().token_expiration, 7200);
    }

    #[test]
    fn flags_still_win_over_a_reloaded_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "injection:\n  tokenExpiration: 3600\n").unwrap();
        let (mut reloader, settings) = start(&path, &["--token-expiration=1800"]);
        assert_eq!(settings.injection.token_expiration, 1800);
        std::fs::write(
            &path,
            "injection:\n  tokenExpiration: 9999\n  stsRegionalEndpoint: true\n",
        )
        .unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        let live = reloader.injection.load();
        assert_eq!(live.token_expiration, 1800);
        assert!(live.sts_regional_endpoint);
    }

    #[test]
    fn policy_changes_reach_the_hook_and_the_annotation_prefix_waits_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "policy:\n  defaultMode: warn\n").unwrap();
        let (reloader, _) = start(&path, &[]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut reloader = reloader.on_policy(move |p| sink.lock().unwrap().push(p.default_mode));
        std::fs::write(
            &path,
            "policy:\n  defaultMode: enforce\ninjection:\n  annotationPrefix: example.com\n",
        )
        .unwrap();
        assert_eq!(reloader.check(), ReloadOutcome::Reloaded);
        assert_eq!(*seen.lock().unwrap(), vec![PolicyMode::Enforce]);
        assert_eq!(reloader.current().policy.default_mode, PolicyMode::Enforce);
        assert_eq!(
            reloader.injection.load().annotation_prefix,
            "eks.amazonaws.com"
        );
    }

    #[test]
    fn start_up_settings_are_found_by_comparing_the_files_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "injection:\n  tokenExpiration: 3600\n").unwrap();
        let (reloader, settings) = start(&path, &[]);
        let mut next = settings.clone();
        next.injection.token_expiration = 7200;
        next.policy.default_mode = PolicyMode::Enforce;
        assert!(reloader.restart_needed(&next).is_empty());
        next.listen = "127.0.0.1:9443".parse().unwrap();
        next.server.max_connections += 1;
        next.injection.annotation_prefix = "example.com".into();
        assert_eq!(
            reloader.restart_needed(&next),
            ["listen", "server", "injection.annotationPrefix"]
        );
    }
}
