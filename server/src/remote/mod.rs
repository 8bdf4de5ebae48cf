//! The client commands, for CI jobs and people at a terminal: `pipelines list`, `run`,
//! `runs get|cancel|logs`. They talk to a Flowdeck server over its REST API, at
//! `FLOWDECK_URL` with the key in `FLOWDECK_API_KEY` (never on the command line, where
//! process listings and shell histories would show it).
//!
//! Exit codes, so a job can gate on them: 0 when the command did what was asked (a waited
//! run completed), 1 when a waited run failed, crashed or was cancelled, or did not end in
//! time, 2 for a usage, connection or server error.

mod follow;

use std::time::Duration;

use app::pipelines::Pipeline;
use app::runs::Run;
use clap::{Args, Subcommand, ValueEnum};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// `pipelines …`.
#[derive(Subcommand)]
pub enum PipelinesCommand {
    /// List every pipeline the key may see, with its latest run's status.
    List(Output),
}

/// `run …`: trigger a pipeline.
#[derive(Args)]
pub struct RunArgs {
    /// The pipeline: its id or its slug.
    pipeline: String,
    /// A parameter override, `name=value`; the value is read as JSON when it is JSON
    /// (`rows=20`, `full=true`, `tags=["a"]`) and as text otherwise (`label=nightly`;
    /// quote it to keep text that looks like JSON: `label='"20"'`). Repeatable.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, Value)>,
    /// Makes the trigger safe to repeat: the same key and parameters give the same run
    /// (a CI job re-run, a retried step), e.g. the commit or build id.
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    /// Follow the run until it ends, a line per stage as it moves; exit 0 only if it
    /// completed.
    #[arg(long)]
    wait: bool,
    /// With `--wait`: give up after this long (`90s`, `30m`, `2h`); the run goes on.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    timeout: Duration,
    #[command(flatten)]
    output: Output,
}

/// `runs …`.
#[derive(Subcommand)]
pub enum RunsCommand {
    /// Show a run with its stages.
    Get {
        /// The run's id.
        id: i64,
        #[command(flatten)]
        output: Output,
    },
    /// Cancel a run that has not finished.
    Cancel {
        /// The run's id.
        id: i64,
        #[command(flatten)]
        output: Output,
    },
    /// Print a run's flow log (from Prefect, credentials masked).
    Logs {
        /// The run's id.
        id: i64,
        /// Keep printing lines as the flow writes them, until the run has ended.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        output: Output,
    },
}

/// How results are printed.
#[derive(Args, Clone, Copy)]
pub struct Output {
    /// `table` for people, `json` for programs (the API's own JSON; log lines one per line).
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Json,
}

/// The client commands.
pub enum Command {
    /// `pipelines …`.
    Pipelines(PipelinesCommand),
    /// `run …`.
    Run(RunArgs),
    /// `runs …`.
    Runs(RunsCommand),
}

/// Runs `command` and answers the process's exit code, having said what went wrong.
pub fn main(command: Command) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return Failure::Connection(format!("cannot start: {error}")).report(),
    };
    match runtime.block_on(execute(command)) {
        Ok(()) => 0,
        Err(failure) => failure.report(),
    }
}

async fn execute(command: Command) -> Result<(), Failure> {
    let remote = Remote::from_env()?;
    match command {
        Command::Pipelines(PipelinesCommand::List(output)) => list_pipelines(&remote, output).await,
        Command::Run(args) => run(&remote, args).await,
        Command::Runs(RunsCommand::Get { id, output }) => {
            let (run, raw) = remote.get::<Run>(&format!("api/runs/{id}")).await?;
            print_run(&run, &raw, output);
            Ok(())
        }
        Command::Runs(RunsCommand::Cancel { id, output }) => {
            let (run, raw) = remote
                .call::<Run>(
                    Method::POST,
                    &format!("api/runs/{id}/cancel"),
                    None,
                    HeaderMap::new(),
                )
                .await?;
            print_run(&run, &raw, output);
            Ok(())
        }
        Command::Runs(RunsCommand::Logs { id, follow, output }) => match follow {
            true => follow::logs(&remote, id, output.output == Format::Json).await,
            false => print_logs(&remote, id, output).await,
        },
    }
}

/// Why a command did not do what was asked; each kind has its exit code.
#[derive(Debug)]
pub enum Failure {
    /// The command line or the environment is wrong.
    Usage(String),
    /// The server could not be reached, or answered what is not Flowdeck's API.
    Connection(String),
    /// The server refused the request, saying why.
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The error body's `code`.
        code: String,
        /// The error body's `detail`.
        detail: String,
    },
    /// A waited run ended other than completed, or did not end in time.
    RunDidNotComplete(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::RunDidNotComplete(_) => 1,
            Failure::Usage(_) | Failure::Connection(_) | Failure::Refused { .. } => 2,
        }
    }

    /// Prints the failure on stderr and answers its exit code.
    fn report(self) -> u8 {
        match &self {
            Failure::Usage(message) => eprintln!("flowdeck: {message}"),
            Failure::Connection(message) => eprintln!("flowdeck: {message}"),
            Failure::Refused { status, code, detail } => {
                eprintln!(
                    "flowdeck: the server refused ({} {code}): {detail}",
                    status.as_u16()
                )
            }
            Failure::RunDidNotComplete(message) => eprintln!("{message}"),
        }
        self.exit_code()
    }
}

/// A Flowdeck server's REST API, with the caller's key.
pub struct Remote {
    http: reqwest::Client,
    base: Url,
    key: HeaderValue,
}

impl Remote {
    /// The server at `FLOWDECK_URL` with the key in `FLOWDECK_API_KEY`.
    fn from_env() -> Result<Self, Failure> {
        let url = std::env::var("FLOWDECK_URL").map_err(|_| {
            Failure::Usage(
                "set FLOWDECK_URL to the server's address, e.g. https://flowdeck.example.com".into(),
            )
        })?;
        let key = std::env::var("FLOWDECK_API_KEY")
            .map_err(|_| Failure::Usage("set FLOWDECK_API_KEY to an API key (made by an admin)".into()))?;
        let base = Url::parse(&format!("{}/", url.trim_end_matches('/')))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| Failure::Usage(format!("FLOWDECK_URL is not an http(s) address: {url}")))?;
        let mut key = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
            .map_err(|_| Failure::Usage("FLOWDECK_API_KEY holds characters no key has".into()))?;
        key.set_sensitive(true);
        let http = reqwest::Client::builder()
            .user_agent(concat!("flowdeck-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|error| Failure::Connection(format!("cannot make an HTTP client: {error}")))?;
        Ok(Remote { http, base, key })
    }

    fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("API paths are relative references")
    }

    /// Sends a request; a refusal becomes [`Failure::Refused`] with the server's reason.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let response = request
            .header(AUTHORIZATION, self.key.clone())
            .send()
            .await
            .map_err(|error| Failure::Connection(format!("cannot reach {}: {}", self.base, plain(&error))))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match (body["code"].as_str(), body["detail"].as_str()) {
            (Some(code), Some(detail)) => Err(Failure::Refused {
                status,
                code: code.to_owned(),
                detail: detail.to_owned(),
            }),
            _ => Err(Failure::Connection(format!(
                "{} answered {status} without Flowdeck's error body: is FLOWDECK_URL the Flowdeck server?",
                self.base
            ))),
        }
    }

    /// A JSON request: the answer as `T` and as it came.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: HeaderMap,
    ) -> Result<(T, Value), Failure> {
        let mut request = self.http.request(method, self.url(path)).headers(headers);
        if let Some(body) = body {
            request = request.json(body);
        }
        let raw: Value = self
            .send(request)
            .await?
            .json()
            .await
            .map_err(|error| Failure::Connection(format!("the answer is not JSON: {}", plain(&error))))?;
        let typed = serde_json::from_value(raw.clone()).map_err(|error| {
            Failure::Connection(format!("the answer is not what this client reads: {error}"))
        })?;
        Ok((typed, raw))
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<(T, Value), Failure> {
        self.call(Method::GET, path, None, HeaderMap::new()).await
    }

    /// `POST /api/pipelines/filter` with `body`.
    async fn pipelines(&self, body: &Value) -> Result<(Vec<Pipeline>, Value), Failure> {
        self.call(Method::POST, "api/pipelines/filter", Some(body), HeaderMap::new())
            .await
    }
}

/// An HTTP client error without the request's address repeated.
fn plain(error: &reqwest::Error) -> String {
    let mut text = match () {
        _ if error.is_timeout() => "timed out",
        _ if error.is_connect() => "could not connect",
        _ if error.is_decode() => "could not read the answer",
        _ => "the request failed",
    }
    .to_owned();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

/// `name=value`, the value as JSON when it is JSON and as text otherwise.
fn parse_param(text: &str) -> Result<(String, Value), String> {
    let (name, value) = text
        .split_once('=')
        .filter(|(name, _)| !name.is_empty())
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE"))?;
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok((name.to_owned(), value))
}

/// Pages through `POST /api/pipelines/filter`, by name.
async fn list_pipelines(remote: &Remote, output: Output) -> Result<(), Failure> {
    const PAGE: usize = 200;
    let (mut pipelines, mut raw) = (Vec::<Pipeline>::new(), Vec::<Value>::new());
    loop {
        let body = json!({"sort": "NAME_ASC", "limit": PAGE, "offset": pipelines.len()});
        let (page, page_raw) = remote.pipelines(&body).await?;
        let last = page.len() < PAGE;
        pipelines.extend(page);
        if let Value::Array(rows) = page_raw {
            raw.extend(rows);
        }
        if last {
            break;
        }
    }
    if output.output == Format::Json {
        println!("{}", Value::Array(raw));
        return Ok(());
    }
    let rows: Vec<[String; 5]> = pipelines
        .iter()
        .map(|p| {
            [
                p.id.to_string(),
                p.slug.clone(),
                p.name.clone(),
                match p.latest_run_id {
                    Some(run) => format!("{} (#{run})", p.status),
                    None => "never run".to_owned(),
                },
                p.updated_at.format("%Y-%m-%d %H:%M").to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        table(["ID", "SLUG", "NAME", "LATEST RUN", "UPDATED"], &rows)
    );
    Ok(())
}

/// `rows` under `header`, each column as wide as its widest cell.
fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

/// Resolves the pipeline, triggers it and, with `--wait`, follows the run to its end.
async fn run(remote: &Remote, args: RunArgs) -> Result<(), Failure> {
    let pipeline_id = match args.pipeline.parse::<i64>() {
        Ok(id) => id,
        Err(_) => by_slug(remote, &args.pipeline).await?,
    };
    let mut headers = HeaderMap::new();
    if let Some(key) = &args.idempotency_key {
        let value = HeaderValue::from_str(key)
            .map_err(|_| Failure::Usage("--idempotency-key must be visible ASCII characters".into()))?;
        headers.insert("idempotency-key", value);
    }
    let parameters: serde_json::Map<String, Value> = args.params.into_iter().collect();
    let body = json!({ "parameters": parameters });
    let path = format!("api/pipelines/{pipeline_id}/runs");
    // A repeat of a key still in use (a re-run racing the first) is told to wait a moment.
    let mut attempts = 0;
    let (run, raw) = loop {
        match remote
            .call::<Run>(Method::POST, &path, Some(&body), headers.clone())
            .await
        {
            Err(Failure::Refused { code, .. }) if code == "in_progress" && attempts < 30 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => break other?,
        }
    };
    if !args.wait {
        print_run(&run, &raw, args.output);
        return Ok(());
    }
    eprintln!(
        "Run #{} of {} accepted; waiting for it to end",
        run.id, run.pipeline_name
    );
    let ended = tokio::time::timeout(args.timeout, follow::until_ended(remote, run.id)).await;
    let (run, raw) = match ended {
        Ok(ended) => ended?,
        Err(_) => {
            return Err(Failure::RunDidNotComplete(format!(
                "Run #{} has not ended after {}; it goes on (cancel it with `flowdeck runs cancel {}`)",
                run.id,
                humantime::format_duration(args.timeout),
                run.id
            )));
        }
    };
    print_run(&run, &raw, args.output);
    match run.status {
        app::status::RunStatus::Completed => Ok(()),
        status => Err(Failure::RunDidNotComplete(format!("Run #{} {status}", run.id))),
    }
}

/// The id of the pipeline with `slug`.
async fn by_slug(remote: &Remote, slug: &str) -> Result<i64, Failure> {
    let body = json!({"pipelines": {"slug": {"any_": [slug]}}, "limit": 1});
    let (found, _) = remote.pipelines(&body).await?;
    found
        .first()
        .map(|p| p.id)
        .ok_or_else(|| Failure::Usage(format!("no pipeline has the id or slug `{slug}`")))
}

/// A run as JSON, or as a summary with a line per stage.
fn print_run(run: &Run, raw: &Value, output: Output) {
    if output.output == Format::Json {
        println!("{raw}");
        return;
    }
    println!(
        "Run #{} of {} (pipeline {}): {}",
        run.id, run.pipeline_name, run.pipeline_id, run.status
    );
    let took = match (run.started_at, run.ended_at) {
        (Some(start), Some(end)) => format!(", took {}", seconds((end - start).num_milliseconds())),
        _ => String::new(),
    };
    println!(
        "  created {}{took}",
        run.created_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(url) = &run.prefect_url {
        println!("  Prefect: {url}");
    }
    let rows: Vec<[String; 4]> = run.stages.iter().map(follow::stage_row).collect();
    if !rows.is_empty() {
        for line in table(["STAGE", "STATUS", "TIME", "RECORDS"], &rows).lines() {
            println!("  {line}");
        }
    }
    if let Some(failure) = &run.failure {
        println!("  why: {}", failure.reason);
        for line in &failure.log_lines {
            println!("    {}", line.as_text());
        }
    }
}

/// Milliseconds as seconds for people: `1.2 s`, `95 s`.
fn seconds(millis: i64) -> String {
    match millis {
        ..10_000 => format!("{:.1} s", millis as f64 / 1000.0),
        _ => format!("{} s", millis / 1000),
    }
}

/// `runs logs ID`: the whole log as the server's download gives it.
async fn print_logs(remote: &Remote, id: i64, output: Output) -> Result<(), Failure> {
    if output.output == Format::Json {
        let mut offset = Some(0);
        while let Some(from) = offset {
            let path = format!("api/runs/{id}/logs?level=debug&limit=200&offset={from}");
            let (page, _) = remote.get::<app::runs::logs::RunLogs>(&path).await?;
            for line in &page.logs {
                println!("{}", serde_json::to_string(line).unwrap_or_default());
            }
            offset = page.next_offset;
        }
        return Ok(());
    }
    let request = remote
        .http
        .get(remote.url(&format!("api/runs/{id}/logs/download")));
    let text = remote
        .send(request.header(ACCEPT, "text/plain"))
        .await?
        .text()
        .await
        .map_err(|error| Failure::Connection(plain(&error)))?;
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_json_when_they_are_json_and_text_otherwise() {
        assert_eq!(parse_param("rows=20").unwrap(), ("rows".into(), json!(20)));
        assert_eq!(parse_param("full=true").unwrap(), ("full".into(), json!(true)));
        assert_eq!(
            parse_param("label=nightly").unwrap(),
            ("label".into(), json!("nightly"))
        );
        assert_eq!(
            parse_param(r#"label="20""#).unwrap(),
            ("label".into(), json!("20"))
        );
        assert_eq!(parse_param("expr=a=b").unwrap(), ("expr".into(), json!("a=b")));
        assert_eq!(parse_param("empty=").unwrap(), ("empty".into(), json!("")));
        assert!(parse_param("=1").is_err());
        assert!(parse_param("rows").is_err());
    }

    #[test]
    fn a_table_pads_each_column_to_its_widest_cell() {
        let rows = [
            ["1".to_owned(), "Nightly ETL".to_owned()],
            ["12".to_owned(), "ü".to_owned()],
        ];
        assert_eq!(table(["ID", "NAME"], &rows), "ID  NAME\n1   Nightly ETL\n12  ü\n");
    }
}
