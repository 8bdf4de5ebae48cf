//! `flowdeck`: the Flowdeck server and its admin commands.

mod cli;
mod config;
mod remote;
mod schema;
mod telemetry;

use anyhow::Context;
use app::routes::Builder;
use axum::Router;
use clap::Parser;
use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;

use crate::cli::{ApiKeyCommand, Cli, Command};
use crate::config::Config;

fn main() -> anyhow::Result<()> {
    let command = match Cli::parse().command.unwrap_or(Command::Serve).into_remote() {
        // A client of another server: none of this one's configuration applies.
        Ok(client) => std::process::exit(remote::main(client).into()),
        Err(command) => command,
    };
    let config = Config::from_env()?;
    // Set up outside the runtime: the exporter has its own thread and is flushed when
    // `telemetry` drops, after the runtime is gone.
    let telemetry = telemetry::init(config.json_logs)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let outcome = runtime.block_on(run(command, config));
    drop(runtime);
    drop(telemetry);
    outcome
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve => serve(config).await,
        Command::Migrate => {
            schema::migrate(&config).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::ApiKey { action } => {
            let pool = schema::connect_migrated(&config).await?;
            match action {
                ApiKeyCommand::Create {
                    role,
                    name,
                    expires_in_days,
                    replace,
                } => cli::create_api_key(&pool, role, &name, expires_in_days, replace).await,
                ApiKeyCommand::List => cli::list_api_keys(&pool).await,
                ApiKeyCommand::Rotate { id, overlap_minutes } => {
                    cli::rotate_api_key(&pool, id, overlap_minutes).await
                }
                ApiKeyCommand::Revoke { id } => cli::revoke_api_key(&pool, id).await,
            }
        }
        Command::Check => cli::check(&config).await,
        Command::Prune => {
            let pool = schema::connect_migrated(&config).await?;
            cli::prune(&pool, &config.pruner()).await
        }
        Command::Pipelines { .. } | Command::Run(_) | Command::Runs { .. } => {
            unreachable!("client commands are run by remote::main")
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let pool = schema::connect_migrated(&config).await?;
    let state = Builder::new(pool)
        .leptos_options(config.leptos_options())
        .secure_cookies(config.secure_cookies)
        .prefect(config.prefect()?.map(std::sync::Arc::new))
        .links(app::prefect::PrefectLinks {
            default_deployment: config.default_deployment.clone(),
            ui_url: config.prefect_ui_url(),
        })
        .budgets(config.budgets)
        .oidc(config.oidc.clone().map(app::auth::oidc::Oidc::new))
        .proxy(config.proxy.clone())
        .trusted_proxies(config.trusted_proxies.clone())
        .callback_ttl(config.callback_ttl)
        .build();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = vec![
        tokio::spawn(state.hub.clone().run(state.db.clone(), stopped.clone())),
        tokio::spawn(app::retention::service::run(
            state.db.clone(),
            config.pruner(),
            stopped.clone(),
        )),
        tokio::spawn(app::auth::limits::keep_limits(
            state.db.clone(),
            state.identity.limits.clone(),
            stopped.clone(),
        )),
        tokio::spawn(app::webhooks::deliver::run(
            state.db.clone(),
            config.webhooks(),
            stopped.clone(),
        )),
    ];
    match state.prefect.clone() {
        Some(prefect) => {
            tracing::info!(prefect.url = prefect.base_url(), "following Prefect");
            workers.push(tokio::spawn(app::runs::dispatch::run(
                state.db.clone(),
                prefect.clone(),
                config.dispatch(),
                stopped.clone(),
            )));
            workers.push(tokio::spawn(app::runs::sync::run(
                state.db.clone(),
                prefect,
                config.sync_interval,
                config.stuck_after,
                stopped.clone(),
            )));
        }
        None => tracing::warn!("PREFECT_API_URL is not set: runs are accepted and wait as pending"),
    }
    // The wasm, JS and CSS, served brotli- or gzip-compressed from the files the build made once;
    // public, since the sign-in page needs them. Everything else is compressed as it goes
    // out (the event stream excepted).
    let pkg = ServeDir::new(std::path::Path::new(&config.site_root).join("pkg"))
        .precompressed_br()
        .precompressed_gzip();
    if let Some(addr) = config.metrics_addr {
        let metrics = Router::new()
            .route("/metrics", axum::routing::get(app::routes::metrics::open_metrics))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on FLOWDECK_METRICS_ADDR={addr}"))?;
        tracing::info!(%addr, "metrics on http://{addr}/metrics");
        let mut stopped = stopped.clone();
        workers.push(tokio::spawn(async move {
            let shutdown = async move {
                stopped.wait_for(|stop| *stop).await.ok();
            };
            if let Err(e) = axum::serve(listener, metrics)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(error = %e, "the metrics listener failed");
            }
        }));
    }
    // On SIGTERM or Ctrl-C: stop accepting, end the event streams, let the requests in
    // flight finish (see `routes::serve`), then stop the workers.
    let hub = state.hub.clone();
    let app = Router::new()
        .nest_service("/pkg", pkg)
        .merge(app::routes::router(state))
        .layer(CompressionLayer::new().quality(CompressionLevel::Precise(5)));
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .with_context(|| format!("cannot listen on FLOWDECK_ADDR={}", config.addr))?;
    tracing::info!(addr = %config.addr, "flowdeck listening on http://{}", config.addr);
    app::routes::serve(listener, app, hub, shutdown_signal())
        .await
        .context("server failed")?;
    stop.send(true).ok();
    for worker in workers {
        worker.await.ok();
    }
    tracing::info!("flowdeck stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        tokio::signal::ctrl_c().await.ok();
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
