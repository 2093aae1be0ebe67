//! A CSV file answered while it is read: the presenter that the JSON API
//! and the console share for [`CsvDownload`]s (the users export, a job's
//! results). A read that fails half-way ends the stream with an error, so
//! the client sees a cut-off download, not a file that looks complete.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::app::sheets::CsvDownload;

impl IntoResponse for CsvDownload {
    fn into_response(self) -> Response {
        let stream = futures::stream::unfold(self.pages, |mut r| async move { r.recv().await.map(|item| (item, r)) });
        (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", self.filename)),
            ],
            Body::from_stream(stream),
        )
            .into_response()
    }
}
