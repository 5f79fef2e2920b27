namespace Gill.ML.Inference;

/// <summary>How <see cref="GillHtml"/> (and the notebook formatters) render GILL prompts and results.</summary>
public sealed class GillHtmlOptions
{
    private int _imageSize = 160;

    /// <summary>
    /// Options the .NET Interactive formatters use when a result is displayed in a notebook (set
    /// <see cref="GalleryRoot"/> here so that retrieved images are shown).
    /// </summary>
    public static GillHtmlOptions Default { get; set; } = new();

    /// <summary>
    /// Folder that relative gallery ids of retrieved images are resolved against; null resolves them against the current
    /// folder. Absolute ids (the default id of an indexed file is its path) need no root.
    /// </summary>
    public string? GalleryRoot { get; set; }

    /// <summary>Maps a gallery id to an image file (null: not available); when set it replaces <see cref="GalleryRoot"/>.</summary>
    public Func<string, string?>? ResolveGalleryImage { get; set; }

    /// <summary>Display width in CSS pixels of generated, prompt and best retrieved images (lower-ranked ones are shown at half size).</summary>
    public int ImageSize
    {
        get => _imageSize;
        set => _imageSize = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(ImageSize), value, "ImageSize must be positive.");
    }

    /// <summary>Show the decision table of the [IMG] groups (default true).</summary>
    public bool ShowDecisions { get; set; } = true;

    /// <summary>Show stage timings and token counts (default true).</summary>
    public bool ShowTimings { get; set; } = true;

    /// <summary>The file of a gallery id, or null when it cannot be resolved to an existing file.</summary>
    public string? ResolveGalleryFile(string id)
    {
        if (string.IsNullOrEmpty(id)) return null;
        string? path;
        if (ResolveGalleryImage is not null) path = ResolveGalleryImage(id);
        else if (Path.IsPathRooted(id) || GalleryRoot is null) path = id;
        else path = Path.Combine(GalleryRoot, id);
        return path is not null && File.Exists(path) ? path : null;
    }
}
