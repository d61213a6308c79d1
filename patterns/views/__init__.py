"""What the firewall team, the platform team and the budget owner read before
anything is deployed, all derived from the plan and the offline resource graph:
the allow-list as CSV/JSON/Markdown, a cost and capacity estimate, the modeled
deploy time, a Mermaid picture, and a comparison of the four patterns."""
