"""The recipes: hear (S1), sound (S5); each a package of config, model, data, train, evaluate, pipeline, demo, cli."""
