//! age encryption keys: X25519 recipients to encrypt to, identities to decrypt with, and an
//! optional passphrase (scrypt) for operators who prefer one.

use std::path::Path;
use std::str::FromStr;

use age::secrecy::SecretString;
use zdr_core::{Error, ErrorKind, Result};

/// The keys used to encrypt and decrypt artifacts with age.
///
/// Writing encrypts to the X25519 recipients when any are set, otherwise to the passphrase
/// when one is set. Reading tries every identity, and the passphrase for passphrase-encrypted
/// artifacts. `Debug` never shows secret material.
#[derive(Clone, Default)]
pub struct AgeKeys {
    recipients: Vec<age::x25519::Recipient>,
    identities: Vec<age::x25519::Identity>,
    passphrase: Option<SecretString>,
    /// Why the configured identity file could not be read, reported when (and only when)
    /// something must be decrypted: encrypting needs only the recipients.
    identity_problem: Option<String>,
}

impl std::fmt::Debug for AgeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgeKeys")
            .field("recipients", &self.recipient_strings())
            .field("identities", &self.identities.len())
            .field("passphrase", &self.passphrase.is_some())
            .field("identity_problem", &self.identity_problem)
            .finish()
    }
}

impl AgeKeys {
    /// No keys: artifacts are written in plaintext and encrypted ones cannot be read.
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Add public recipients (`age1...`).
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] naming the recipient that does not parse.
    pub fn with_recipients<S: AsRef<str>>(mut self, recipients: &[S]) -> Result<Self> {
        for r in recipients {
            let r = r.as_ref().trim();
            let parsed = age::x25519::Recipient::from_str(r).map_err(|e| {
                Error::bad_input(format!("invalid age recipient {r:?}: {e}"))
                    .with_hint("an X25519 recipient looks like age1... (see `age-keygen -y`)")
            })?;
            self.recipients.push(parsed);
        }
        Ok(self)
    }

    /// Add identities (`AGE-SECRET-KEY-1...`) from the text of an identity file, as written
    /// by `age-keygen`: one per line, `#` comments and blank lines ignored.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] naming the line that does not parse (never its content).
    pub fn with_identities_text(mut self, text: &str, origin: &str) -> Result<Self> {
        let mut found = 0;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let id = age::x25519::Identity::from_str(line).map_err(|_| {
                Error::bad_input(format!(
                    "line {} of age identity file {origin} is not an X25519 identity",
                    n + 1
                ))
                .with_hint("identities look like AGE-SECRET-KEY-1... (from `age-keygen`)")
            })?;
            self.identities.push(id);
            found += 1;
        }
        if found == 0 {
            return Err(Error::bad_input(format!(
                "age identity file {origin} holds no identity"
            )));
        }
        Ok(self)
    }

    /// Add the identities of an identity file.
    ///
    /// # Errors
    /// [`ErrorKind::BadInput`] when the file cannot be read or holds no valid identity.
    pub fn with_identity_file(self, path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::bad_input(format!("cannot read age identity file {}", path.display()))
                .with_source(e)
        })?;
        self.with_identities_text(&text, &path.display().to_string())
    }

    /// Like [`AgeKeys::with_identity_file`], but a file that cannot be read is not an error
    /// yet: backups (which encrypt to the recipients) still run, and decrypting reports the
    /// file and why it could not be read. A file that can be read but holds no identity is
    /// an error at once.
    ///
    /// # Errors
    /// A readable file that is not an age identity file.
    pub fn with_identity_file_when_needed(mut self, path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => self.with_identities_text(&text, &path.display().to_string()),
            Err(e) => {
                self.identity_problem = Some(format!(
                    "cannot read age identity file {}: {e}",
                    path.display()
                ));
                Ok(self)
            }
        }
    }

    /// Use a passphrase (scrypt) to encrypt when no recipient is set, and to decrypt
    /// passphrase-encrypted artifacts.
    #[must_use]
    pub fn with_passphrase(mut self, passphrase: String) -> Self {
        self.passphrase = Some(SecretString::from(passphrase));
        self
    }

    /// A fresh X25519 identity, as `age-keygen` makes: returns `(secret, public)` strings.
    #[must_use]
    pub fn generate_identity() -> (String, String) {
        use age::secrecy::ExposeSecret;
        let id = age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        (id.to_string().expose_secret().to_owned(), public)
    }

    /// True when writing will encrypt.
    #[must_use]
    pub fn encrypts(&self) -> bool {
        !self.recipients.is_empty() || self.passphrase.is_some()
    }

    /// True when there is something to decrypt with.
    #[must_use]
    pub fn can_decrypt(&self) -> bool {
        !self.identities.is_empty() || self.passphrase.is_some()
    }

    /// Why the configured identity file could not be read, when it could not.
    #[must_use]
    pub fn identity_problem(&self) -> Option<&str> {
        self.identity_problem.as_deref()
    }

    /// The recipients as `age1...` strings (public).
    #[must_use]
    pub fn recipient_strings(&self) -> Vec<String> {
        self.recipients.iter().map(ToString::to_string).collect()
    }

    pub(crate) fn encryption_record(&self) -> Option<zdr_core::Encryption> {
        self.encrypts().then(|| zdr_core::Encryption::Age {
            recipients: self.recipient_strings(),
            passphrase: self.recipients.is_empty(),
        })
    }

    pub(crate) fn encryptor(&self) -> Result<age::Encryptor> {
        if self.recipients.is_empty() {
            let pass = self.passphrase.clone().ok_or_else(|| {
                Error::unexpected("encryption asked for without recipients or passphrase")
            })?;
            return Ok(age::Encryptor::with_user_passphrase(pass));
        }
        age::Encryptor::with_recipients(self.recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| Error::bad_input(format!("cannot encrypt to the recipients: {e}")))
    }

    pub(crate) fn decrypt<R: std::io::Read>(
        &self,
        input: R,
    ) -> Result<age::stream::StreamReader<R>> {
        let decryptor = age::Decryptor::new(input)
            .map_err(|e| Error::new(ErrorKind::Integrity, format!("not a valid age file: {e}")))?;
        let result = if decryptor.is_scrypt() {
            let Some(pass) = self.passphrase.clone() else {
                return Err(Error::new(
                    ErrorKind::Decrypt,
                    "the artifact is encrypted with a passphrase and none is set",
                )
                .with_hint("set ZDR_AGE_PASSPHRASE or encryption.passphrase_env"));
            };
            let id = age::scrypt::Identity::new(pass);
            decryptor.decrypt(std::iter::once(&id as &dyn age::Identity))
        } else {
            if self.identities.is_empty() {
                if let Some(problem) = &self.identity_problem {
                    return Err(Error::new(
                        ErrorKind::Decrypt,
                        format!("the artifact is encrypted and {problem}"),
                    ));
                }
                return Err(Error::new(
                    ErrorKind::Decrypt,
                    "the artifact is encrypted and no age identity is configured",
                )
                .with_hint("set encryption.identity_file to the age key"));
            }
            decryptor.decrypt(self.identities.iter().map(|i| i as &dyn age::Identity))
        };
        result.map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::new(
                ErrorKind::Decrypt,
                "no configured age identity matches the artifact (wrong key?)",
            )
            .with_hint("use the identity whose public key is among the manifest's recipients"),
            age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
                Error::new(
                    ErrorKind::Decrypt,
                    "age decryption failed (wrong passphrase or key?)",
                )
            }
            other => Error::new(
                ErrorKind::Integrity,
                format!("age header is damaged: {other}"),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_keys_are_bad_input_and_never_echo_secrets() {
        let e = AgeKeys::none().with_recipients(&["age1nope"]).err();
        assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::BadInput));
        let secret = "AGE-SECRET-KEY-1NOTAVALIDKEYBUTLOOKSSECRET";
        let e = AgeKeys::none()
            .with_identities_text(&format!("# comment\n{secret}\n"), "/etc/zdr/age.key")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("line 2 of age identity file /etc/zdr/age.key"),
            "{e}"
        );
        assert!(!e.contains(secret), "{e}");
        let e = AgeKeys::none()
            .with_identities_text("# only comments\n", "k")
            .err();
        assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::BadInput));
    }

    #[test]
    fn debug_hides_secrets() {
        let (secret, public) = AgeKeys::generate_identity();
        let keys = AgeKeys::none()
            .with_recipients(std::slice::from_ref(&public))
            .and_then(|k| k.with_identities_text(&secret, "t"))
            .map(|k| k.with_passphrase("hunter2".into()));
        let text = format!("{keys:?}");
        assert!(text.contains(&public));
        assert!(
            !text.contains(&secret) && !text.contains("hunter2"),
            "{text}"
        );
    }
}
