//! Reward functions that score a completion of a prompt.

use std::str::FromStr;

use crate::task::sentiment;

/// A reward function, named on the command line as `oracle:NAME`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reward {
    /// [`sentiment::oracle_reward`]: the sentiment of what the completion wrote, in `[-1, 1]`,
    /// -1 for text outside the task's language.
    Sentiment,
}

impl Reward {
    /// Every reward function, by name.
    pub const ALL: [(&'static str, Reward); 1] = [("oracle:sentiment", Reward::Sentiment)];

    /// The reward of `completion` given `prompt` (texts; the completion as decoded, with its
    /// leading space).
    pub fn score(self, prompt: &str, completion: &str) -> f64 {
        match self {
            Reward::Sentiment => sentiment::oracle_reward(prompt, completion),
        }
    }

    /// The name [`FromStr`] reads.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, r)| *r == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// A reward name that is not one of [`Reward::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown reward `{0}`: expected one of {known}", known = Reward::ALL.map(|(n, _)| n).join(", "))]
pub struct UnknownReward(pub String);

impl FromStr for Reward {
    type Err = UnknownReward;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, r)| *r)
            .ok_or_else(|| UnknownReward(s.to_string()))
    }
}
