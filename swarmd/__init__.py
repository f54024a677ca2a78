"""swarmd"""
