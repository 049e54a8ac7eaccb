"""The web app's pages and routes (FastAPI), its security middleware and its lifetime.

Every route but the login page and the static files requires a login; every POST carries
the login's CSRF token. Pages are Jinja2 templates with autoescaping; the visit's assessment
is the report's own patient template (``inference/report/templates``), shown inside the
app's frame. Nothing is loaded from outside the app (Content-Security-Policy ``'self'``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import unicodedata
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import ChoiceLoader, Environment, FileSystemLoader
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from scalpscan.app import exporting
from scalpscan.app.auth import check_password, end_session, find_session, new_token, start_session, tokens_match
from scalpscan.app.config import AppConfig
from scalpscan.app.db import AuditEntry, LoginSession, Patient, Photo, Visit, open_database
from scalpscan.app.records import (
    assess_visit,
    assign_unknown,
    compare_visits,
    newest_first,
    patient_label,
    visit_intake,
    visit_limits,
    visit_progress,
)
from scalpscan.app.store import PhotoStore, UploadError, check_photo
from scalpscan.app.scoring import Scorer
from scalpscan.inference.intake import parse_sex
from scalpscan.inference.report import patient_context
from scalpscan.inference.report.render import DECISION_COLOURS, OUTPUT_NAMES, template_environment
from scalpscan.inference.rules import load_rules

__all__ = ["create_app", "SESSION_COOKIE", "CSP"]

_log = logging.getLogger("scalpscan.app")
_T = TypeVar("_T")
_HERE = Path(__file__).parent
_REPORT_TEMPLATES = _HERE.parent / "inference" / "report" / "templates"
#: Name of the login cookie.
SESSION_COOKIE = "scalpscan_session"
_LOGIN_CSRF_COOKIE = "scalpscan_login_csrf"
#: The Content-Security-Policy of every response: nothing but the app itself.
CSP = ("default-src 'none'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
_STATIC = {"app.css": ("text/css", _HERE / "static" / "app.css"),
           "app.js": ("text/javascript", _HERE / "static" / "app.js"),
           "report.css": ("text/css", _REPORT_TEMPLATES / "report.css")}
_KEY = re.compile(r"^[^\x00-\x1f\x7f]{1,120}$")
_MAX_NOTES = 4000


class _Redirect(Exception):
    """Raised by a route to answer with a redirect (to the login page)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url


class _BodyLimit:
    """Refuses request bodies over ``limit`` bytes (413), by Content-Length or while streaming."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await _too_large(self.limit, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await _too_large(self.limit, send)


class _TooLarge(Exception):
    pass


async def _too_large(limit: int, send: Callable) -> None:
    body = f"Upload too large: at most {limit / 1e6:.0f} MB per request.".encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _environment() -> Environment:
    # The app's templates come first: its base.html.j2 frames the report's patient template.
    env = template_environment(
        ChoiceLoader([FileSystemLoader(str(_HERE / "templates")), FileSystemLoader(str(_REPORT_TEMPLATES))]))
    env.filters["points"] = lambda v: "–" if v is None else f"{v * 100:+.0f} pts"
    env.filters["signed"] = lambda v: "–" if v is None else f"{v:+d}"
    env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M") if isinstance(v, dt.datetime) else str(v)
    env.filters["output"] = lambda v: OUTPUT_NAMES.get(str(v), str(v).replace("_", " "))
    env.filters["patient"] = patient_label
    env.globals["decision_colours"] = DECISION_COLOURS
    return env


def _text(value: Any, limit: int) -> str:
    """A form value as one line of text: NFC, control characters removed, trimmed and bounded."""
    text = unicodedata.normalize("NFC", str(value or ""))
    text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch)[0] != "C")
    return text.strip()[:limit]


def create_app(config: AppConfig, *, predictor: Any = None) -> FastAPI:
    """Build the app: open (and migrate) the database, and start the background scorer with the app.

    Args:
        config: settings.
        predictor: a loaded `Predictor` to score with (None: loaded from ``config.model`` on first use).
    """
    config.data_dir = Path(config.data_dir)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    engine, sessions = open_database(config.url)
    store = PhotoStore(config.data_dir)
    rules = load_rules(config.rules)
    env = _environment()

    def load_predictor() -> Any:
        if predictor is not None:
            return predictor
        from scalpscan.inference.predictor import Predictor

        return Predictor.load(config.model) if config.model is not None else Predictor.load()

    scorer = Scorer(sessions, store, load_predictor, batch_size=config.batch_size)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # noqa: ANN202 - FastAPI's lifespan protocol
        if config.score:
            scorer.start()
        try:
            yield
        finally:
            scorer.stop()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config, app.state.engine, app.state.sessions = config, engine, sessions
    app.state.store, app.state.scorer, app.state.rules = store, scorer, rules

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable) -> Response:
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if config.allowed_hosts is not None and host not in config.allowed_hosts:
            return Response(f"Host {host!r} is not served here.", status_code=400, media_type="text/plain")
        try:
            response = await call_next(request)
        except _Redirect as redirect:
            response = RedirectResponse(redirect.url, status_code=303)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    app.add_middleware(_BodyLimit, limit=config.max_request_bytes)

    @app.exception_handler(_Redirect)
    async def redirect(_: Request, exc: _Redirect) -> Response:
        return RedirectResponse(exc.url, status_code=303)

    # -- helpers ----------------------------------------------------------------------

    def page(template: str, login: LoginSession | None, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("actions", [])
        html = env.get_template(template).render(user=login.user.name if login else None,
                                                 csrf=login.csrf if login else None, inline_css=None,
                                                 **context)
        return HTMLResponse(html, status_code=status)

    def login_for(request: Request, db: Session, *, api: bool = False) -> LoginSession:
        login = find_session(db, request.cookies.get(SESSION_COOKIE))
        if login is None:
            if api:
                raise HTTPException(401, "log in first")
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise _Redirect("/login?next=" + quote(target, safe=""))
        return login

    def audit(db: Session, login: LoginSession | None, action: str, target: str = "", detail: str = "") -> None:
        db.add(AuditEntry(user=login.user.name if login else "-", action=action, target=target[:200], detail=detail))

    async def form_of(request: Request, *, files: int = 0) -> Any:
        try:
            return await request.form(max_files=files, max_fields=40, max_part_size=64 * 1024)
        except StarletteHTTPException as exc:
            raise HTTPException(400, f"the form could not be read: {exc.detail}") from None

    def check_csrf(login: LoginSession, form: Any) -> None:
        if not tokens_match(login.csrf, form.get("csrf")):
            raise HTTPException(403, "the form's security token is missing or wrong; reload the page and try again")

    async def staff_action(request: Request, form: Any,
                           work: Callable[[Session, LoginSession], _T]) -> _T:
        """``work(db, login)`` for a logged-in member of staff whose ``form`` passed the CSRF
        check: in the thread pool, in one database session."""
        def run() -> _T:
            with sessions() as db:
                login = login_for(request, db)
                check_csrf(login, form)
                return work(db, login)

        return await run_in_threadpool(run)

    def get_patient(db: Session, pid: int) -> Patient:
        patient = db.get(Patient, pid)
        if patient is None:
            raise HTTPException(404, "no such patient")
        return patient

    def get_visit(db: Session, vid: int) -> Visit:
        visit = db.scalar(select(Visit).where(Visit.id == vid).options(
            selectinload(Visit.photos), selectinload(Visit.patient).selectinload(Patient.visits).selectinload(Visit.photos)))
        if visit is None:
            raise HTTPException(404, "no such visit")
        return visit

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.endswith((".json", "/status")) or exc.status_code == 401:
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
        html = env.get_template("app_error.html.j2").render(user=None, csrf=None, inline_css=None, actions=[],
                                                            status=exc.status_code, message=exc.detail)
        return HTMLResponse(html, status_code=exc.status_code)

    # -- login ------------------------------------------------------------------------

    @app.get("/static/{name}")
    def static(name: str) -> Response:
        if name not in _STATIC:
            raise HTTPException(404, "not found")
        media, path = _STATIC[name]
        return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=3600"})

    def login_page(next_url: str, error: str | None = None, status: int = 200) -> HTMLResponse:
        token = new_token()
        response = page("app_login.html.j2", None, status=status, next=next_url, error=error, login_csrf=token)
        response.set_cookie(_LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login")
        return response

    def safe_next(value: Any) -> str:
        text = str(value or "/patients")
        # Only paths of this app: never another host ("//evil", "/\\evil", "https://").
        return text if text.startswith("/") and not text.startswith(("//", "/\\")) else "/patients"

    @app.get("/login")
    def login_get(request: Request) -> Response:
        return login_page(safe_next(request.query_params.get("next")))

    @app.post("/login")
    async def login_post(request: Request) -> Response:
        form = await form_of(request)
        next_url = safe_next(form.get("next"))
        if not tokens_match(request.cookies.get(_LOGIN_CSRF_COOKIE), form.get("csrf")):
            return login_page(next_url, "The form's security token is missing or wrong; please try again.", 403)
        name, password = _text(form.get("name"), 80), str(form.get("password") or "")

        def attempt() -> str | None:
            with sessions() as db:
                user = check_password(db, name, password)
                if user is None:
                    db.add(AuditEntry(user=name or "-", action="login failed"))
                    db.commit()
                    return None
                token, login = start_session(db, user, hours=config.session_hours)
                db.add(AuditEntry(user=user.name, action="login"))
                db.commit()
                return token

        token = await run_in_threadpool(attempt)
        if token is None:
            return login_page(next_url, "Unknown user name or wrong password.", 401)
        response = RedirectResponse(next_url, status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                            max_age=int(config.session_hours * 3600), path="/")
        response.delete_cookie(_LOGIN_CSRF_COOKIE, path="/login")
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        form = await form_of(request)

        def run(db: Session, login: LoginSession) -> None:
            audit(db, login, "logout")
            end_session(db, request.cookies.get(SESSION_COOKIE))
            db.commit()

        await staff_action(request, form, run)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- patients ---------------------------------------------------------------------

    @app.get("/")
    def home() -> Response:
        return RedirectResponse("/patients", status_code=303)

    @app.get("/patients")
    def patients(request: Request, q: str = "") -> Response:
        with sessions() as db:
            login = login_for(request, db)
            query = select(Patient).order_by(Patient.key).limit(500)
            q = _text(q, 120)
            if q:
                like = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                query = query.where(or_(func.lower(Patient.key).like(like, escape="\\"),
                                        func.lower(Patient.name).like(like, escape="\\")))
            found = db.scalars(query.options(selectinload(Patient.visits))).all()
            rows = [{"p": p, "visits": len(p.visits), "last": max((v.date for v in p.visits), default=None)}
                    for p in found]
            return page("app_patients.html.j2", login, patients=rows, q=q, error=None, form={})

    @app.post("/patients")
    async def patient_create(request: Request) -> Response:
        form = await form_of(request)

        def run(db: Session, login: LoginSession) -> Response:
            key, name = _text(form.get("key"), 200), _text(form.get("name"), 200)
            error = None
            if not key or not _KEY.match(key):
                error = "Patient id: 1 to 120 characters, required."
            elif len(name) > 200:
                error = "Name: at most 200 characters."
            elif db.scalar(select(Patient).where(Patient.key == key)) is not None:
                error = f"A patient with id {key!r} exists already."
            if error:
                return page("app_patients.html.j2", login, 400, patients=[], q="", error=error,
                            form={"key": key, "name": name})
            patient = Patient(key=key, name=name)
            db.add(patient)
            try:
                db.flush()
            except IntegrityError:
                db.rollback()
                return page("app_patients.html.j2", login, 400, patients=[], q="",
                            error=f"A patient with id {key!r} exists already.", form={"key": key, "name": name})
            audit(db, login, "create patient", f"patient {patient.id}", key)
            db.commit()
            return RedirectResponse(f"/patients/{patient.id}", status_code=303)

        return await staff_action(request, form, run)

    @app.get("/patients/{pid}")
    def patient_view(request: Request, pid: int) -> Response:
        with sessions() as db:
            login = login_for(request, db)
            patient = get_patient(db, pid)
            visits = []
            for visit in newest_first(patient.visits):
                scored, total = visit_progress(visit)
                assessment = assess_visit(visit, rules) if scored == total and total else None
                not_assessed, unvalidated = visit_limits(visit, assessment) if assessment else ([], [])
                visits.append({"v": visit, "scored": scored, "total": total, "a": assessment,
                               "label": rules.label("decisions", assessment.decision) if assessment else None,
                               "not_assessed": not_assessed, "unvalidated": unvalidated})
            audit(db, login, "view patient", f"patient {patient.id}", patient.key)
            db.commit()
            return page("app_patient.html.j2", login, patient=patient, visits=visits)

    @app.post("/patients/{pid}/delete")
    async def patient_delete(request: Request, pid: int) -> Response:
        form = await form_of(request)

        def run(db: Session, login: LoginSession) -> Response:
            patient = get_patient(db, pid)
            if _text(form.get("confirm"), 200) != patient.key:
                raise HTTPException(400, "to delete the patient, type their patient id exactly")
            photos = [(p.sha256, p.ext) for v in patient.visits for p in v.photos]
            key = patient.key
            db.delete(patient)
            audit(db, login, "delete patient", f"patient {pid}", f"{len(photos)} photo(s)")
            db.commit()
            # Files go once the rows are gone; a file another patient's visit shares stays.
            for sha256, ext in set(photos):
                if db.scalar(select(func.count()).select_from(Photo).where(Photo.sha256 == sha256)) == 0:
                    store.delete(sha256, ext)
            _log.info("deleted patient %s and %d photo(s)", key, len(photos))
            return RedirectResponse("/patients", status_code=303)

        return await staff_action(request, form, run)

    @app.post("/patients/{pid}/assign")
    async def patient_assign(request: Request, pid: int) -> Response:
        form = await form_of(request)

        def run(db: Session, login: LoginSession) -> Response:
            unknown = get_patient(db, pid)
            key = _text(form.get("to"), 120)
            target = db.scalar(select(Patient).where(Patient.key == key, Patient.known.is_(True))) if key else None
            if target is None:
                raise HTTPException(400, f"no known patient with the id {key!r}; type the id of an existing patient")
            try:
                moved = assign_unknown(unknown, target)
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
            record, target_id = unknown.key, target.id
            db.delete(unknown)
            audit(db, login, "assign photos", f"patient {target_id}",
                  f"{moved} photo(s) of unknown patient {record} assigned to {target.key}")
            db.commit()
            _log.info("assigned %d photo(s) of unknown patient %s to %s", moved, record, key)
            return RedirectResponse(f"/patients/{target_id}", status_code=303)

        return await staff_action(request, form, run)

    @app.get("/patients/{pid}/export.json")
    def patient_export(request: Request, pid: int) -> Response:
        with sessions() as db:
            login = login_for(request, db, api=True)
            patient = get_patient(db, pid)
            data = exporting.patient_json(patient, rules)
            audit(db, login, "export json", f"patient {pid}", patient.key)
            db.commit()
        body = json.dumps(data, indent=1, ensure_ascii=False, default=str)
        return Response(body, media_type="application/json", headers={
            "Content-Disposition": f"attachment; filename=patient-{pid}.json"})

    # -- visits -----------------------------------------------------------------------

    def visit_form(login: LoginSession, patient: Patient, status: int = 200, errors: list[str] | None = None,
                   values: dict[str, Any] | None = None) -> HTMLResponse:
        last = newest_first(patient.visits)[0] if patient.visits else None
        defaults = {"date": dt.date.today().isoformat(), "sex": (last.sex or "") if last else "",
                    "keloid_history": last.keloid_history if last else False,
                    "eczema_active": last.eczema_active if last else False,
                    "psoriasis_active": last.psoriasis_active if last else False, "notes": ""}
        return page("app_visit_new.html.j2", login, status, patient=patient, errors=errors or [],
                    values=values or defaults, max_photos=config.max_photos,
                    max_mb=round(config.max_photo_bytes / 1e6))

    @app.get("/patients/{pid}/visits/new")
    def visit_new(request: Request, pid: int) -> Response:
        with sessions() as db:
            login = login_for(request, db)
            return visit_form(login, get_patient(db, pid))

    @app.post("/patients/{pid}/visits")
    async def visit_create(request: Request, pid: int) -> Response:
        with sessions() as db:  # refuse before reading a large body when not logged in
            login_for(request, db)
        try:
            form = await request.form(max_files=config.max_photos, max_fields=40, max_part_size=64 * 1024)
        except StarletteHTTPException as exc:
            detail = str(exc.detail)
            if "files" in detail.lower():
                detail = f"at most {config.max_photos} photos per visit upload"
            raise HTTPException(400, f"the upload was refused: {detail}") from None
        uploads = [f for f in form.getlist("photos") if hasattr(f, "read")]
        contents = [(await f.read(config.max_photo_bytes + 1), f.filename) for f in uploads]

        def run(db: Session, login: LoginSession) -> Response:
            patient = get_patient(db, pid)
            values = {"date": _text(form.get("date"), 20), "sex": _text(form.get("sex"), 20),
                      "notes": _text(form.get("notes"), _MAX_NOTES + 1)}
            for flag in ("keloid_history", "eczema_active", "psoriasis_active"):
                values[flag] = form.get(flag) == "yes"
            errors, checked = [], []
            try:
                date = dt.date.fromisoformat(values["date"])
                if date > dt.date.today() + dt.timedelta(days=1):
                    errors.append(f"Visit date {values['date']}: in the future.")
            except ValueError:
                errors.append(f"Visit date {values['date']!r}: not a date (YYYY-MM-DD).")
                date = None
            try:
                sex = parse_sex(values["sex"])
            except ValueError as exc:
                errors.append(f"Sex {values['sex']!r}: {exc}.")
                sex = None
            if len(values["notes"]) > _MAX_NOTES:
                errors.append(f"Notes: at most {_MAX_NOTES} characters.")
            if not contents or all(not data and not name for data, name in contents):
                errors.append("No photos: add at least one photo of the scalp.")
            seen: set[str] = set()
            for data, name in contents:
                if not data and not name:
                    continue
                try:
                    photo = check_photo(data, name, max_bytes=config.max_photo_bytes)
                except UploadError as exc:
                    errors.append(str(exc))
                    continue
                if photo.sha256 not in seen:
                    seen.add(photo.sha256)
                    checked.append(photo)
            if errors:
                return visit_form(login, patient, 400, errors, values)
            for photo in checked:  # files first, atomically: the rows below point at whole files
                store.put(photo)
            visit = Visit(patient=patient, date=date, sex=sex, keloid_history=values["keloid_history"],
                          eczema_active=values["eczema_active"], psoriasis_active=values["psoriasis_active"],
                          notes=values["notes"], created_by=login.user.name)
            visit.photos = [Photo(sha256=p.sha256, ext=p.ext, original_name=p.name, status="pending")
                            for p in checked]
            db.add(visit)
            db.flush()
            audit(db, login, "add visit", f"visit {visit.id}", f"patient {patient.key}, {len(checked)} photo(s)")
            db.commit()
            scorer.wake()
            return RedirectResponse(f"/visits/{visit.id}", status_code=303)

        return await staff_action(request, form, run)

    def visit_actions(visit: Visit) -> list[tuple[str, str]]:
        actions = [(f"/patients/{visit.patient_id}", "← " + patient_label(visit.patient)),
                   (f"/visits/{visit.id}/report.pdf", "Export PDF"),
                   (f"/patients/{visit.patient_id}/export.json", "Export all data (JSON)")]
        others = [v for v in newest_first(visit.patient.visits) if v.id != visit.id]
        if others:
            actions.append((f"/patients/{visit.patient_id}/compare?a={others[0].id}&b={visit.id}", "Compare with "
                            + others[0].date.isoformat()))
        return actions

    def report_context(visit: Visit) -> dict[str, Any]:
        # The report page's values, with the visit's assessment made with the patient's earlier
        # visits as prior (so measured progression shows), for the report template in the app's frame.
        photos = [p for p in visit.photos if p.status != "pending" and p.result]
        context = patient_context([p.result for p in photos], assessment=assess_visit(visit, rules),
                                  intake=visit_intake(visit), rules=rules, base=config.data_dir,
                                  label=patient_label(visit.patient), known=visit.patient.known)
        for shown, photo in zip(context["photos"], photos):
            shown["figure"].name = photo.original_name  # the stored file is named by its hash
        return context

    @app.get("/visits/{vid}")
    def visit_view(request: Request, vid: int) -> Response:
        with sessions() as db:
            login = login_for(request, db)
            visit = get_visit(db, vid)
            scored, total = visit_progress(visit)
            audit(db, login, "view visit", f"visit {vid}", visit.patient.key)
            db.commit()
            if scored < total:
                return page("app_visit_progress.html.j2", login, visit=visit, scored=scored, total=total,
                            actions=[(f"/patients/{visit.patient_id}", "← " + patient_label(visit.patient))])
            context = report_context(visit)
            return page("patient.html.j2", login, index_href=None, csp="", css="",
                        actions=visit_actions(visit), visit=visit, **context)

    @app.get("/visits/{vid}/status")
    def visit_status(request: Request, vid: int) -> Response:
        with sessions() as db:
            login_for(request, db, api=True)
            visit = get_visit(db, vid)
            scored, total = visit_progress(visit)
            return JSONResponse({"scored": scored, "total": total, "done": scored == total})

    @app.get("/visits/{vid}/report.pdf")
    def visit_pdf(request: Request, vid: int) -> Response:
        with sessions() as db:
            login = login_for(request, db)
            visit = get_visit(db, vid)
            if visit_progress(visit)[0] < len(visit.photos):
                raise HTTPException(409, "the visit is still being scored; export it when the assessment is shown")
            context = report_context(visit)
            css = (_REPORT_TEMPLATES / "report.css").read_text(encoding="utf-8") + "\n" + (
                _HERE / "static" / "app.css").read_text(encoding="utf-8")
            html = env.get_template("patient.html.j2").render(
                user=None, csrf=None, inline_css=css, index_href=None, csp="",
                css="", actions=[], visit=visit, **context)
            try:
                pdf = exporting.html_to_pdf(html, chromium=config.chromium)
            except exporting.ExportError as exc:
                raise HTTPException(503, str(exc)) from None
            audit(db, login, "export pdf", f"visit {vid}", visit.patient.key)
            db.commit()
        return Response(pdf, media_type="application/pdf", headers={
            "Content-Disposition": f"attachment; filename=visit-{vid}.pdf"})

    @app.get("/photos/{photo_id}")
    def photo(request: Request, photo_id: int) -> Response:
        with sessions() as db:
            login_for(request, db, api=True)
            item = db.get(Photo, photo_id)
            if item is None:
                raise HTTPException(404, "no such photo")
            sha256, ext = item.sha256, item.ext
        try:
            path = store.display(sha256, ext)
        except (OSError, ValueError) as exc:
            raise HTTPException(404, f"the photo cannot be shown: {getattr(exc, 'problem', exc)}") from None
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})

    @app.get("/patients/{pid}/compare")
    def compare(request: Request, pid: int, a: int = 0, b: int = 0) -> Response:
        with sessions() as db:
            login = login_for(request, db)
            patient = get_patient(db, pid)
            visits = {v.id: v for v in patient.visits}
            if a not in visits or b not in visits or a == b:
                raise HTTPException(400, "choose two different visits of this patient to compare")
            for v in (visits[a], visits[b]):
                if visit_progress(v)[0] < len(v.photos):
                    raise HTTPException(409, f"the visit of {v.date} is still being scored")
            result = compare_visits(visits[a], visits[b], rules)
            audit(db, login, "compare visits", f"patient {pid}", f"visits {a} and {b}")
            db.commit()
            return page("app_compare.html.j2", login, patient=patient, c=result, rules=rules,
                        actions=[(f"/patients/{pid}", "← " + patient_label(patient))])

    @app.get("/audit")
    def audit_view(request: Request) -> Response:
        with sessions() as db:
            login = login_for(request, db)
            entries = db.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(500)).all()
            return page("app_audit.html.j2", login, entries=entries)

    return app
