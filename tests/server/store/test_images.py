"""Images (``store.images``).

On SQLite, and on PostgreSQL too when TEST_DATABASE_URL is set (``conftest``)."""

from __future__ import annotations

from server.data import store
from server.data.db import SyncDatabase
from server.data.models import new_id
from tests.server.store.rows import new_upload, new_user, stored_image


def test_get_image_is_scoped_to_its_owner(db: SyncDatabase) -> None:
    """Found by its owner and by an admin (user_id None); not by anyone else."""
    owner, other = new_user(db), new_user(db)
    view = new_upload(db, owner)
    assert view.image is not None
    mine = db.read(store.get_image, image_id=view.image.id, user_id=owner)
    assert mine is not None and mine.id == view.image.id
    assert db.read(store.get_image, image_id=view.image.id, user_id=None) is not None
    assert db.read(store.get_image, image_id=view.image.id, user_id=other) is None
    assert db.read(store.get_image, image_id=new_id(), user_id=None) is None


def test_list_images_pages_the_users_images_newest_first(db: SyncDatabase) -> None:
    """limit caps a page; ``before`` continues after the last id; others' images never show."""
    owner, other = new_user(db), new_user(db)
    ids = [view.image.id for view in (new_upload(db, owner) for _ in range(5))
           if view.image is not None]
    new_upload(db, other)
    newest_first = sorted(ids, reverse=True)
    page = db.read(store.list_images, user_id=owner, limit=2)
    assert [image.id for image in page] == newest_first[:2]
    page = db.read(store.list_images, user_id=owner, limit=2, before=page[-1].id)
    assert [image.id for image in page] == newest_first[2:4]
    page = db.read(store.list_images, user_id=owner, limit=10, before=page[-1].id)
    assert [image.id for image in page] == newest_first[4:]
    assert [i.id for i in db.read(store.list_images, user_id=owner, limit=10)] == newest_first


def test_delete_image_removes_the_row_for_its_owner_only(db: SyncDatabase) -> None:
    """Another user gets None and the image stays; the owner gets the row and it is gone.
    Its job stays, now without an image."""
    owner, other = new_user(db), new_user(db)
    view = new_upload(db, owner)
    assert view.image is not None
    image_id = view.image.id
    assert db.write(store.delete_image, image_id=image_id, user_id=other) is None
    assert stored_image(db, image_id) is not None
    removed = db.write(store.delete_image, image_id=image_id, user_id=owner)
    assert removed is not None and removed.id == image_id
    assert stored_image(db, image_id) is None
    job = db.read(store.get_job, job_id=view.job.id, user_id=owner)
    assert job is not None and job.image is None
    assert db.write(store.delete_image, image_id=image_id, user_id=None) is None


def test_record_image_output_stores_stage_results(db: SyncDatabase) -> None:
    """Any given columns are stored; an unknown image gives None."""
    view = new_upload(db, new_user(db))
    assert view.image is not None
    got = db.write(store.record_image_output, image_id=view.image.id, has_thumbnail=True,
                   meta={"exif": {"Model": "X"}}, width=640, height=480)
    assert got is not None
    image = stored_image(db, view.image.id)
    assert image is not None
    assert (image.has_thumbnail, image.has_preview, image.meta, image.width, image.height) == (
        True, False, {"exif": {"Model": "X"}}, 640, 480)
    assert db.write(store.record_image_output, image_id=new_id(), has_preview=True) is None
