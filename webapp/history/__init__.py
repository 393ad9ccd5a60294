"""Each user's own history of analyses: list, filters, detail, image, delete, export."""
