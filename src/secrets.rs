//! Secrets come from the environment or from files, never best from a command line: a command
//! line is visible to every user of the host (`ps`), and a help screen shows the environment's
//! values.
//!
//! Each secret variable `X` may instead be given as `X_FILE`, the path of a file holding it (as
//! container platforms mount secrets); a secret given as a flag still works, with a warning.

use std::path::Path;

use clap::parser::ValueSource;
use clap::ArgMatches;

/// The variables that hold secrets, or URLs that may carry a password.
pub const SECRET_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "NATS_URL",
    "DEVART_JWT_SECRET",
    "DEVART_AGENT_KEY",
    "DEVART_TELEGRAM_BOT_TOKEN",
    "DEVART_WEBHOOK_SECRET",
    "DEVART_EMBEDDINGS_API_KEY",
];

/// The flags that take a secret, by argument id, with the variable to use instead.
const SECRET_FLAGS: &[(&str, &str, &str)] = &[
    ("jwt_secret", "--jwt-secret", "DEVART_JWT_SECRET"),
    ("telegram_bot_token", "--telegram-bot-token", "DEVART_TELEGRAM_BOT_TOKEN"),
    ("webhook_secret", "--webhook-secret", "DEVART_WEBHOOK_SECRET"),
    ("key", "--key", "DEVART_AGENT_KEY"),
    ("embeddings_api_key", "--embeddings-api-key", "DEVART_EMBEDDINGS_API_KEY"),
];

/// Sets each `X` given as `X_FILE` from its file. To be called before any thread starts (it sets
/// the process's environment). Errors name the variable and the file, never what it holds.
pub fn load_files() -> Result<(), String> {
    for name in SECRET_VARIABLES {
        let file_variable = format!("{name}_FILE");
        let Some(path) = std::env::var_os(&file_variable) else { continue };
        if std::env::var_os(name).is_some() {
            return Err(format!("both {name} and {file_variable} are set: keep one"));
        }
        let value = read_secret(Path::new(&path)).map_err(|e| format!("{file_variable}: {e}"))?;
        std::env::set_var(name, value);
    }
    Ok(())
}

/// A secret file's content, without the line end editors add.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = text.trim_end_matches(['\n', '\r']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(value.to_owned())
}

/// Warns once for each secret that was given on the command line.
pub fn warn_flags(matches: &ArgMatches) {
    let mut levels = vec![matches];
    let mut current = matches;
    while let Some((_, sub)) = current.subcommand() {
        levels.push(sub);
        current = sub;
    }
    for (id, flag, variable) in SECRET_FLAGS {
        let given = levels.iter().any(|m| {
            m.try_get_raw(id).is_ok_and(|v| v.is_some()) && m.value_source(id) == Some(ValueSource::CommandLine)
        });
        if given {
            tracing::warn!(
                "{flag} puts a secret on the command line, where every user of this host can read it; \
                 use {variable} or {variable}_FILE instead"
            );
        }
    }
}

/// `url` with any password replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(an unparseable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(redact_url("postgres://u:hunter2@db:5432/devart"), "postgres://u:***@db:5432/devart");
        assert_eq!(redact_url("postgres://db/devart"), "postgres://db/devart");
        assert!(!redact_url("nats://a:hunter2@h:4222").contains("hunter2"));
    }

    #[test]
    fn a_secret_file_loses_its_line_end_and_an_empty_one_is_refused() {
        let dir = std::env::temp_dir().join(format!("devart-secret-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("key"), "dva_abc_def\n").unwrap();
        std::fs::write(dir.join("empty"), "\n").unwrap();
        assert_eq!(read_secret(&dir.join("key")).unwrap(), "dva_abc_def");
        assert!(read_secret(&dir.join("empty")).unwrap_err().contains("empty"));
        assert!(read_secret(&dir.join("missing")).unwrap_err().contains("cannot read"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
