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
    /// Compiles `source`; a syntax error says where it is.
    pub fn new(source: &str) -> Result<Self, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source.to_string())?;
        Ok(Self { env })
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
        self.env.get_template("chat")?.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token.unwrap_or(""),
            eos_token => eos_token.unwrap_or(""),
        })
    }
}
