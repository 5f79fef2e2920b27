using System.Text.Json.Serialization;
using SkiaSharp;

namespace Gill.ML.World;

/// <summary>The kinds of shape the shapes world draws.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ShapeKind>))]
public enum ShapeKind
{
    /// <summary>A filled circle.</summary>
    Circle,
    /// <summary>An axis-aligned filled square.</summary>
    Square,
    /// <summary>An upward-pointing equilateral triangle.</summary>
    Triangle,
    /// <summary>A five-pointed star, one point up.</summary>
    Star,
    /// <summary>A rhombus standing on a corner.</summary>
    Diamond,
    /// <summary>A plus-shaped cross.</summary>
    Cross,
}

/// <summary>Object colours; each one is clearly separable in RGB from the others.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ShapeColor>))]
public enum ShapeColor
{
    /// <summary>RGB (230, 40, 40).</summary>
    Red,
    /// <summary>RGB (40, 200, 60).</summary>
    Green,
    /// <summary>RGB (50, 90, 255).</summary>
    Blue,
    /// <summary>RGB (240, 220, 40).</summary>
    Yellow,
    /// <summary>RGB (165, 60, 220).</summary>
    Purple,
    /// <summary>RGB (255, 140, 20).</summary>
    Orange,
    /// <summary>RGB (40, 220, 220).</summary>
    Cyan,
    /// <summary>RGB (240, 240, 240).</summary>
    White,
}

/// <summary>Object sizes.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ShapeSize>))]
public enum ShapeSize
{
    /// <summary>Radius ≈ 0.13 of the image width.</summary>
    Small,
    /// <summary>Radius ≈ 0.22 of the image width.</summary>
    Large,
}

/// <summary>Object positions (centres snapped to whole pixels).</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ShapePosition>))]
public enum ShapePosition
{
    /// <summary>The image centre.</summary>
    Centre,
    /// <summary>A quarter of the width from the left edge, vertically centred.</summary>
    Left,
    /// <summary>A quarter of the width from the right edge, vertically centred.</summary>
    Right,
    /// <summary>A quarter of the height from the top edge, horizontally centred.</summary>
    Top,
    /// <summary>A quarter of the height from the bottom edge, horizontally centred.</summary>
    Bottom,
}

/// <summary>Background colours: black and a few dark tones that every object colour stands out from.</summary>
[JsonConverter(typeof(JsonStringEnumConverter<ShapesBackground>))]
public enum ShapesBackground
{
    /// <summary>RGB (0, 0, 0); never mentioned in captions.</summary>
    Black,
    /// <summary>RGB (45, 45, 45), "grey".</summary>
    Grey,
    /// <summary>RGB (15, 20, 70), "navy".</summary>
    Navy,
    /// <summary>RGB (70, 15, 20), "maroon".</summary>
    Maroon,
    /// <summary>RGB (0, 55, 55), "teal".</summary>
    Teal,
}

/// <summary>A (colour, shape) composition, e.g. the held-out pairs never shown in training.</summary>
/// <param name="Color">The colour.</param>
/// <param name="Shape">The shape.</param>
public readonly record struct ShapesPair(ShapeColor Color, ShapeKind Shape)
{
    /// <summary>"red triangle".</summary>
    public override string ToString() => $"{ShapesWords.Color(Color)} {ShapesWords.Shape(Shape)}";

    /// <summary>Parses "red:triangle" or "red triangle" (case-insensitive).</summary>
    /// <exception cref="FormatException">The text is not a colour and a shape.</exception>
    public static ShapesPair Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var parts = text.Split([':', ' ', '-', '_'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length != 2
            || !Enum.TryParse<ShapeColor>(parts[0], true, out var c) || !Enum.IsDefined(c)
            || !Enum.TryParse<ShapeKind>(parts[1], true, out var s) || !Enum.IsDefined(s))
            throw new FormatException($"'{text}' is not a colour:shape pair such as 'red:triangle' (colours: {string.Join(", ", Enum.GetNames<ShapeColor>()).ToLowerInvariant()}; shapes: {string.Join(", ", Enum.GetNames<ShapeKind>()).ToLowerInvariant()}).");
        return new ShapesPair(c, s);
    }
}

/// <summary>The words and RGB values of the world's attributes.</summary>
public static class ShapesWords
{
    /// <summary>The caption word of a shape ("circle").</summary>
    public static string Shape(ShapeKind shape) => shape switch
    {
        ShapeKind.Circle => "circle",
        ShapeKind.Square => "square",
        ShapeKind.Triangle => "triangle",
        ShapeKind.Star => "star",
        ShapeKind.Diamond => "diamond",
        ShapeKind.Cross => "cross",
        _ => throw new ArgumentOutOfRangeException(nameof(shape), shape, "Unknown shape."),
    };

    /// <summary>The caption word of a colour ("red").</summary>
    public static string Color(ShapeColor color) => color switch
    {
        ShapeColor.Red => "red",
        ShapeColor.Green => "green",
        ShapeColor.Blue => "blue",
        ShapeColor.Yellow => "yellow",
        ShapeColor.Purple => "purple",
        ShapeColor.Orange => "orange",
        ShapeColor.Cyan => "cyan",
        ShapeColor.White => "white",
        _ => throw new ArgumentOutOfRangeException(nameof(color), color, "Unknown colour."),
    };

    /// <summary>The canonical caption word of a size ("small" / "large").</summary>
    public static string Size(ShapeSize size) => size == ShapeSize.Small ? "small" : "large";

    /// <summary>The caption word of a background ("navy").</summary>
    public static string Background(ShapesBackground background) => background switch
    {
        ShapesBackground.Black => "black",
        ShapesBackground.Grey => "grey",
        ShapesBackground.Navy => "navy",
        ShapesBackground.Maroon => "maroon",
        ShapesBackground.Teal => "teal",
        _ => throw new ArgumentOutOfRangeException(nameof(background), background, "Unknown background."),
    };

    /// <summary>The canonical phrase of a position ("on the left", "in the middle").</summary>
    public static string Position(ShapePosition position) => position switch
    {
        ShapePosition.Centre => "in the middle",
        ShapePosition.Left => "on the left",
        ShapePosition.Right => "on the right",
        ShapePosition.Top => "at the top",
        ShapePosition.Bottom => "at the bottom",
        _ => throw new ArgumentOutOfRangeException(nameof(position), position, "Unknown position."),
    };

    /// <summary>The word used after "moves to the" ("left", "middle").</summary>
    public static string Direction(ShapePosition position) => position switch
    {
        ShapePosition.Centre => "middle",
        ShapePosition.Left => "left",
        ShapePosition.Right => "right",
        ShapePosition.Top => "top",
        ShapePosition.Bottom => "bottom",
        _ => throw new ArgumentOutOfRangeException(nameof(position), position, "Unknown position."),
    };

    /// <summary>The RGB value a colour is drawn with.</summary>
    public static SKColor Rgb(ShapeColor color) => color switch
    {
        ShapeColor.Red => new SKColor(230, 40, 40),
        ShapeColor.Green => new SKColor(40, 200, 60),
        ShapeColor.Blue => new SKColor(50, 90, 255),
        ShapeColor.Yellow => new SKColor(240, 220, 40),
        ShapeColor.Purple => new SKColor(165, 60, 220),
        ShapeColor.Orange => new SKColor(255, 140, 20),
        ShapeColor.Cyan => new SKColor(40, 220, 220),
        ShapeColor.White => new SKColor(240, 240, 240),
        _ => throw new ArgumentOutOfRangeException(nameof(color), color, "Unknown colour."),
    };

    /// <summary>The RGB value a background is filled with.</summary>
    public static SKColor Rgb(ShapesBackground background) => background switch
    {
        ShapesBackground.Black => new SKColor(0, 0, 0),
        ShapesBackground.Grey => new SKColor(45, 45, 45),
        ShapesBackground.Navy => new SKColor(15, 20, 70),
        ShapesBackground.Maroon => new SKColor(70, 15, 20),
        ShapesBackground.Teal => new SKColor(0, 55, 55),
        _ => throw new ArgumentOutOfRangeException(nameof(background), background, "Unknown background."),
    };

    /// <summary>"a" or "an" before <paramref name="nextWord"/>.</summary>
    public static string Article(string nextWord) =>
        nextWord.Length > 0 && "aeiou".Contains(char.ToLowerInvariant(nextWord[0])) ? "an" : "a";
}
