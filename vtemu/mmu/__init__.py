"""Guest page walk, nested paging (EPT) and, later, shadow paging."""
