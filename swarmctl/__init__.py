"""swarmctl"""
