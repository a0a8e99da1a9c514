//! Reads a scrape in the Prometheus text format (what `metrics-exporter-prometheus` renders
//! and the demo serves on `/metrics`), so that tests compare numbers instead of looking for
//! substrings.

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of one scrape.
#[derive(Debug, Clone)]
pub struct Scrape(pub Vec<Sample>);

impl Scrape {
    /// Parses a scrape; panics, naming the line, on one that is not a sample, a comment or
    /// blank.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}")))
            .collect();
        Scrape(samples)
    }

    /// The sum of the samples named `name` that carry every label of `labels` (other labels
    /// allowed); `None` if there is no such sample.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`value`](Self::value), but the sample must be there.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in the scrape:\n{self:#?}"))
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"`, with `\"`, `\\` and `\n` escapes in values.
fn parse_labels(mut text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        text = rest[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

#[test]
fn a_scrape_is_read_into_samples_with_their_labels() {
    let scrape = Scrape::parse(
        "# TYPE x counter\nx{a=\"1\",b=\"q\\\"t\"} 3\nx{a=\"2\"} 4\ny 0.5\nz_bucket{le=\"+Inf\"} 2\n",
    );
    assert_eq!(scrape.get("x", &[]), 7.0);
    assert_eq!(scrape.get("x", &[("b", "q\"t")]), 3.0);
    assert_eq!(scrape.get("y", &[]), 0.5);
    assert_eq!(scrape.value("x", &[("a", "3")]), None);
    assert_eq!(scrape.get("z_bucket", &[("le", "+Inf")]), 2.0);
}
