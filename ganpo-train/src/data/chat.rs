//! Chat templates: rendering conversations as transformers' `apply_chat_template` does.

use minijinja::{Environment, Error, ErrorKind, Value, context};

use super::record::Message;

/// A compiled Jinja chat template (the `chat_template` of a model's tokenizer config).
///
/// Rendering follows transformers: the template sees `messages`, `add_generation_prompt`,
/// `bos_token`, `eos_token` and `raise_exception`; blocks are trimmed (`trim_blocks`,
/// `lstrip_blocks`) and Python string methods (`.strip()`, `.startswith()`, `.split()`, ...) work,
/// as in transformers' sandboxed Jinja environment.
///
/// A template is untrusted code from a model repository: one render may run at most
/// [`ChatTemplate::FUEL`] instructions and write at most [`ChatTemplate::MAX_OUTPUT`] bytes, and
/// either limit ends it with an error naming the template, never a hang. (A template that builds
/// an exponentially long string in a variable without writing it is not bounded by either.)
///
/// # Example
/// ```
/// use ganpo_train::data::{ChatTemplate, Message};
///
/// let t = ChatTemplate::new(
///     "{% for m in messages %}<|{{ m.role }}|>{{ m.content.strip() }}\n{% endfor %}\
///      {% if add_generation_prompt %}<|assistant|>{% endif %}",
/// ).unwrap();
/// let msgs = [Message { role: "user".into(), content: " hi ".into() }];
/// assert_eq!(t.render(&msgs, true, None, None).unwrap(), "<|user|>hi\n<|assistant|>");
/// ```
pub struct ChatTemplate {
    env: Environment<'static>,
    name: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

impl ChatTemplate {
    /// Instructions one render may execute: a real chat template over a conversation of
    /// thousands of messages runs well under a million; a runaway loop stops here in about a
    /// second.
    pub const FUEL: u64 = 10_000_000;

    /// Bytes one render may write (a 128k-token conversation is under 1 MB of text).
    pub const MAX_OUTPUT: usize = 64 << 20;

    /// Compiles `source`; a syntax error says where it is.
    pub fn new(source: &str) -> Result<Self, Error> {
        Self::named(source, "chat_template")
    }

    /// Compiles `source` under `name` (the file it came from), which every error then names.
    pub fn named(source: &str, name: &str) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.set_fuel(Some(Self::FUEL));
        env.add_template_owned(name.to_string(), source.to_string())?;
        Ok(Self {
            env,
            name: name.to_string(),
        })
    }

    /// Renders `messages`; with `add_generation_prompt` the text ends where the assistant's reply
    /// starts.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<String, Error> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| context! { role => m.role, content => m.content })
            .collect();
        let context = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        };
        let mut out = Bounded {
            text: Vec::new(),
            limit: Self::MAX_OUTPUT,
        };
        let template = self.env.get_template(&self.name)?;
        let rendered = {
            let _rendering = super::template_guard::rendering(&self.name);
            template.render_captured_to(context, &mut out).map(|_| ())
        };
        match rendered {
            Ok(_) => String::from_utf8(out.text)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string())),
            Err(_) if out.text.len() > out.limit => Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "the chat template {} wrote more than {} bytes for one conversation",
                    self.name,
                    Self::MAX_OUTPUT
                ),
            )),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(Error::new(
                ErrorKind::OutOfFuel,
                format!(
                    "the chat template {} ran more than {} instructions for one conversation \
                     (a runaway loop?)",
                    self.name,
                    Self::FUEL
                ),
            )
            .with_source(e)),
            Err(e) => Err(e),
        }
    }
}

/// A writer that fails once more than `limit` bytes were written to it.
struct Bounded {
    text: Vec<u8>,
    limit: usize,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(buf);
        if self.text.len() > self.limit {
            return Err(std::io::Error::other("output limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
